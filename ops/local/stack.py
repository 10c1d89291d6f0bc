"""The local two-region stack: emulators, topology, two ingresses behind HAProxy, primary + standby pipelines.

`Stack.start()` brings it up and writes `.paynow/stack.json` (endpoints, secret, pids, each process's command) so
other tools, tests and drills can drive it; `Stack.attach()` rebuilds a handle from that file (to kill, restart or
measure its processes); `Stack.stop()` / `paynow down` stop everything that was started, process group by group.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops.local import emulators, haproxy, prometheus
from ops.local.emulators import LOOPBACK, free_port
from ops.local.process import NotReady, http_ok, start_time, wait_for
from ops.local.process import Process as Process  # the stack's processes; `paynow up` and fake_paynow import it here
from ops.local.topology import DEFAULT_PROJECT, Topology
from schemas.deliveries import event_type_enum
from schemas.signing import new_secret

PRIMARY, SECONDARY = "us-central1", "europe-west1"
STACK_FILE = "stack.json"
# Demo mappings seeded by `paynow up` / `paynow seed`: customers whose payloads carry no uid.
DEMO_MAPPINGS = {"cus_demo_alice": "user_alice", "cus_demo_bob": "user_bob", "cus_demo_carol": "user_carol"}
# HAProxy notices a draining ingress within 1 s (2 checks × 500 ms), so 2 s of drain on SIGTERM is enough. The
# rate limit keeps its defaults: it charges refused requests only, and sees local clients through HAProxy's
# X-Forwarded-For (FORWARDED_HOPS=1: HAProxy appends the one entry; the client is the right-most).
LOCAL_SETTINGS = {"DRAIN_SECONDS": "2", "FORWARDED_HOPS": "1"}


def bound_secrets(secret: str) -> dict[str, str]:
    """The ingress's secrets as Cloud Run gets them (deploy/ingress.tf): one PAYNOW_WEBHOOK_SECRETS_<TYPE> variable
    per PayNow subscription, each bound to its event type. Every type holds the stack's one secret, because the
    local traffic tools sign every delivery with `webhookSecret`."""
    return {f"PAYNOW_WEBHOOK_SECRETS_{event_type}": secret for event_type in event_type_enum()}


def local_secrets(secret: str) -> dict[str, str]:
    """bound_secrets, plus the same secret bare: the traffic mix also sends a future type (ON_SOMETHING_NEW) that no
    PayNow subscription can have yet, and only a bare secret verifies it (the ingress warns about it at start)."""
    return {**bound_secrets(secret), "PAYNOW_WEBHOOK_SECRETS": secret}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def shield_from_signals() -> None:
    """Ignore Ctrl-C, SIGTERM and SIGHUP while stopping, so a second signal cannot cut the cleanup short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StackError(RuntimeError):
    """The stack could not start, or a stack file is missing, stale or unreadable."""


def home() -> Path:
    """Where the stack keeps its state, logs and traffic records (PAYNOW_HOME, default ./.paynow)."""
    return Path(os.environ.get("PAYNOW_HOME", ".paynow")).absolute()


@dataclass
class Config:
    """What `paynow up` starts; `lb=False` + one region + no standby is the single-region demo stack."""

    project: str = DEFAULT_PROJECT
    regions: tuple[str, ...] = (PRIMARY, SECONDARY)
    lb: bool = True
    standby: bool = True
    home: Path = field(default_factory=home)
    mappings: dict[str, str] = field(default_factory=lambda: dict(DEMO_MAPPINGS))
    ingress_env: dict[str, str] = field(default_factory=dict)  # extra settings for both ingresses
    pipeline_args: tuple[str, ...] = ()


class Stack:
    """A running (or attached) local stack; see the module docstring."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.topology = Topology(project=self.config.project)
        self.processes: dict[str, Process] = {}
        self.emulators: list[emulators.Emulator] = []
        self.info: dict[str, Any] = {}
        self.secret = ""
        self._saved_env: dict[str, str | None] = {}

    # -- paths ---------------------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.config.home

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def traffic_dir(self) -> Path:
        return self.home / "traffic"

    @property
    def stack_file(self) -> Path:
        return self.home / STACK_FILE

    # -- start ---------------------------------------------------------------------------------------------
    def start(self, progress: Any = None) -> Stack:
        say = progress or (lambda _msg: None)
        if self.stack_file.exists():
            previous = read_info(self.stack_file)
            if previous and supervisor_alive(previous):
                raise StackError(f"a stack is already running (pid {previous.get('supervisorPid')}, "
                                 f"{self.stack_file}); use it, or stop it with `paynow down`")
        self.home.mkdir(parents=True, exist_ok=True)
        self._archive_old_traffic()
        try:
            say("emulators")
            self._emulators()
            say("topics, subscriptions, catalog")
            self._topology()
            self.secret = new_secret()
            for region in self.config.regions:
                say(f"ingress {region}")
                self._ingress(region)
            for region in self.config.regions:
                self.wait_ingress_ready(region)
            if self.config.lb:
                say("load balancer (HAProxy)")
                self._haproxy()
            say("fake PayNow Management API")
            from ops.local.fake_paynow import start_in_stack

            start_in_stack(self)  # holds every delivery the traffic generator sends, for `paynow reconcile`
            self.write()
            pipelines = [PRIMARY] + ([SECONDARY] if self.config.standby else [])
            for region in pipelines:
                say(f"pipeline {region}")
                self._pipeline(region)
            for region in pipelines:
                self.wait_pipeline_ready(region)
            if self.config.lb:
                self.wait_lb(set(self.config.regions))
                say("Prometheus")
                prometheus.start(self)  # scrapes the processes above, evaluates deploy/prometheus/rules.yml
            self.write()
        except BaseException:
            self.stop()
            raise
        return self

    def _archive_old_traffic(self) -> None:
        logs = sorted(self.traffic_dir.glob("*.jsonl"))
        if logs:
            archive = self.traffic_dir / "archive" / time.strftime("%Y%m%d-%H%M%S")
            archive.mkdir(parents=True, exist_ok=True)
            for log in logs:
                shutil.move(str(log), archive / log.name)

    def _emulators(self) -> None:
        for kind in ("pubsub", "firestore"):
            emulator = emulators.start_or_reuse(kind, log_dir=self.logs)
            self.emulators.append(emulator)
            self._saved_env.setdefault(emulator.env_var, os.environ.get(emulator.env_var))
            os.environ[emulator.env_var] = emulator.host

    def _topology(self) -> None:
        from google.cloud import firestore

        from ops.admin.catalog import map_customer, seed_products

        self.topology.create()
        client = firestore.Client(project=self.config.project)
        try:
            seed_products(client)
            for customer, uid in self.config.mappings.items():
                map_customer(client, customer, uid)
        finally:
            client.close()

    def emulator_env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": os.environ.get("PUBSUB_EMULATOR_HOST", ""),
                "FIRESTORE_EMULATOR_HOST": os.environ.get("FIRESTORE_EMULATOR_HOST", ""),
                "GOOGLE_CLOUD_PROJECT": self.config.project}

    def _ingress(self, region: str) -> None:
        port = free_port()
        primary = self.config.regions[0]
        secondary = self.config.regions[1] if len(self.config.regions) > 1 else SECONDARY
        env = {
            **self.emulator_env(),
            "REGION": region, "SERVICE_NAME": f"paynow-ingress-{region}", "LOG_LEVEL": "INFO",
            "MULTI_REGION_ENABLED": "true", "PRIMARY_REGION": primary, "SECONDARY_REGION": secondary,
            "FAILOVER_ENABLED": "true", "EVENT_SCHEMA_VERSION": "4", "EVENT_SCHEMA_MIN_COMPATIBLE": "2",
            **local_secrets(self.secret), "PUBSUB_TOPIC": self.topology.topic,
            "ADMIN_TOKEN": secrets.token_urlsafe(24), "PORT": str(port),
            **LOCAL_SETTINGS, **self.config.ingress_env,
        }
        # each region's secret-holding config, readable by its owner only (what Secret Manager gives Cloud Run)
        config_dir = self.home / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        config_file = config_dir / f"ingress-{region}.env"
        config_file.touch(mode=0o600)
        config_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
        self.processes[f"ingress-{region}"] = process = Process(
            f"ingress-{region}", [sys.executable, "-m", "ingress"], env, str(self.logs / f"ingress-{region}.log"))
        process.start()

    def _haproxy(self) -> None:
        servers = [haproxy.Server(region, LOOPBACK, int(self.processes[f"ingress-{region}"].env["PORT"]))
                   for region in self.config.regions]
        frontend, stats = free_port(), free_port()
        socket_path = self.home / "haproxy.sock"
        config_path = self.home / "haproxy.cfg"
        config_path.write_text(haproxy.render_config(servers=servers, frontend_port=frontend, stats_port=stats,
                                                     stats_socket=socket_path))
        haproxy.check_config(config_path)
        self.processes["haproxy"] = process = Process("haproxy", haproxy.command(config_path), {},
                                                      str(self.logs / "haproxy.log"))
        process.start()
        self.info["lb"] = {"url": f"http://{LOOPBACK}:{frontend}", "statsUrl": f"http://{LOOPBACK}:{stats}/stats",
                           "statsSocket": str(socket_path), "config": str(config_path)}
        self._wait(lambda: socket_path.exists(), "haproxy stats socket", process, 15)

    def _pipeline(self, region: str) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "pipeline", "--subscription", self.topology.subscription,
                "--dlq_topic", self.topology.dlq_topic, "--project", self.config.project, "--region", region,
                "--metrics_port", str(port), *self.config.pipeline_args]
        self.processes[f"pipeline-{region}"] = process = Process(
            f"pipeline-{region}", argv, {**self.emulator_env(), "METRICS_PORT": str(port)},
            str(self.logs / f"pipeline-{region}.log"))
        process.start()

    # -- readiness -----------------------------------------------------------------------------------------
    @staticmethod
    def _wait(condition: Callable[[], bool], what: str, process: Process | None, timeout: float) -> None:
        try:
            wait_for(condition, what, timeout, process)
        except NotReady as exc:
            raise StackError(str(exc)) from None

    def ingress_url(self, region: str) -> str:
        return f"http://{LOOPBACK}:{self.processes[f'ingress-{region}'].env['PORT']}"

    def wait_ingress_ready(self, region: str, timeout: float = 60) -> None:
        self._wait(lambda: http_ok(self.ingress_url(region) + "/readyz"), f"ingress {region} /readyz",
                   self.processes[f"ingress-{region}"], timeout)

    def metrics_url(self, region: str) -> str:
        return f"http://{LOOPBACK}:{self.processes[f'pipeline-{region}'].env['METRICS_PORT']}/metrics"

    def wait_pipeline_ready(self, region: str, timeout: float = 180) -> None:
        process = self.processes[f"pipeline-{region}"]
        log = Path(process.log)
        offset = 0

        def ready() -> bool:
            nonlocal offset
            with contextlib.suppress(OSError):
                text = log.read_bytes()
                if b"pipeline ready" in text[offset:]:
                    return True
            return False
        # only a "ready" line written after this (re)start counts
        text = log.read_bytes() if log.exists() else b""
        offset = text.rfind(b"==== ")
        offset = max(offset, 0)
        self._wait(ready, f"pipeline {region}", process, timeout)

    def lb_stats(self) -> list[haproxy.ServerStats]:
        return haproxy.read_stats(Path(self.info["lb"]["statsSocket"]))

    def wait_lb(self, in_rotation: set[str], timeout: float = 30) -> float:
        """Wait until exactly `in_rotation` regions are UP in the load balancer; the seconds it took."""
        started = time.monotonic()

        def settled() -> bool:
            try:
                return {s.name for s in self.lb_stats() if s.status == "UP"} == in_rotation
            except haproxy.HAProxyError:
                return False
        self._wait(settled, f"load balancer with {sorted(in_rotation)} in rotation", self.processes.get("haproxy"),
                   timeout)
        return time.monotonic() - started

    # -- faults and restarts (drills) ---------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """A drill's fault: `sig` (kill -9) to a process's group; no straggler of the group survives."""
        self.processes[name].kill(sig)

    def restart(self, name: str, extra_env: dict[str, str] | None = None, *, wait: bool = True) -> None:
        """(Re)start a process with the same command, port and settings (plus `extra_env`)."""
        process = self.processes[name]
        if process.alive():
            process.stop()
        process.start(extra_env)
        self.write()
        if wait and name.startswith("ingress-"):
            self.wait_ingress_ready(name.removeprefix("ingress-"))
        elif wait and name.startswith("pipeline-"):
            self.wait_pipeline_ready(name.removeprefix("pipeline-"))

    def admin(self, region: str, action: str) -> int:
        """POST /admin/drain or /admin/undrain to a region's ingress with its admin token."""
        env = self.processes[f"ingress-{region}"].env
        response = httpx.post(f"{self.ingress_url(region)}/admin/{action}",
                              headers={"authorization": f"Bearer {env['ADMIN_TOKEN']}"}, timeout=5)
        return response.status_code

    # -- state file ----------------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """Where webhooks go: the load balancer, or the only ingress of a single-region stack."""
        return self.info["lb"]["url"] if "lb" in self.info else self.ingress_url(self.config.regions[0])

    def write(self) -> None:
        owned = [e for e in self.emulators if e.owned]
        info = {
            **self.info,
            "supervisorPid": self.info.get("supervisorPid", os.getpid()),
            "supervisorStarted": self.info.get("supervisorStarted", start_time(os.getpid())),
            "home": str(self.home),
            "project": self.config.project,
            "regions": list(self.config.regions),
            "webhookSecret": self.secret,
            "emulators": {"pubsub": os.environ.get("PUBSUB_EMULATOR_HOST"),
                          "firestore": os.environ.get("FIRESTORE_EMULATOR_HOST"),
                          "owned": [{"kind": e.kind, "pid": e.process.pid if e.process else 0,
                                     "started": e.process.started if e.process else None}
                                    for e in owned]},
            "topic": self.topology.topic, "subscription": self.topology.subscription,
            "dlqTopic": self.topology.dlq_topic, "dlqSubscription": self.topology.dlq_subscription,
            "ingress": {r: {"url": self.ingress_url(r)} for r in self.config.regions
                        if f"ingress-{r}" in self.processes},
            "pipelines": {n.removeprefix("pipeline-"): {"metricsUrl": self.metrics_url(n.removeprefix("pipeline-"))}
                          for n in self.processes if n.startswith("pipeline-")},
            "trafficDir": str(self.traffic_dir),
            "logs": str(self.logs),
            "processes": {n: p.to_json() for n, p in self.processes.items()},
            "config": {"lb": self.config.lb, "standby": self.config.standby},
        }
        first_ingress = next(iter(info["ingress"].values()), {"url": None})
        info["target"] = info["lb"]["url"] if "lb" in info else first_ingress["url"]
        self.info = info
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.stack_file)

    @classmethod
    def attach(cls, path: Path | None = None) -> Stack:
        """A handle on a stack another process started (from its stack.json); it sets the emulator variables."""
        path = path or home() / STACK_FILE
        info = read_info(path)
        if not info:
            raise StackError(f"no running stack: {path} does not exist (start one with `paynow up`)")
        if not supervisor_alive(info):
            raise StackError(f"the stack in {path} is not running any more (its supervisor "
                             f"{info.get('supervisorPid')} is gone); start one with `paynow up`")
        config = Config(project=info["project"], regions=tuple(info["regions"]), lb=info["config"]["lb"],
                        standby=info["config"]["standby"], home=Path(info["home"]))
        stack = cls(config)
        stack.info = info
        stack.secret = info["webhookSecret"]
        for name, data in info["processes"].items():
            stack.processes[name] = Process(**data)
        use_emulators(info)
        return stack

    # -- stop ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process this stack started (in reverse order), then the emulators it started."""
        if self.stack_file.exists():  # pick up processes a drill in another process restarted
            info = read_info(self.stack_file) or {}
            if info.get("supervisorPid") == os.getpid():
                for name, data in info.get("processes", {}).items():
                    if name in self.processes and data["pid"] != self.processes[name].pid:
                        self.processes[name] = Process(**data)
        # the traffic generator first; then the rest together (the ingresses drain for a few seconds on SIGTERM)
        first = [p for n, p in self.processes.items() if n == "traffic"]
        rest = [p for n, p in self.processes.items() if n != "traffic"]
        for group in (first, rest):
            for process in group:
                process.signal(signal.SIGTERM)
            for process in group:
                process.stop()
        for emulator in reversed(self.emulators):
            emulator.stop()
        self.emulators.clear()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        last = read_info(self.stack_file) if self.stack_file.exists() else None
        if last and last.get("supervisorPid") == os.getpid():
            self.stack_file.unlink(missing_ok=True)


def read_info(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{path} is not valid JSON ({exc}); remove it") from None


def supervisor_alive(info: dict[str, Any]) -> bool:
    pid = int(info.get("supervisorPid") or 0)
    return bool(pid) and start_time(pid) == info.get("supervisorStarted")


def use_emulators(info: dict[str, Any]) -> None:
    """Point this process's Google clients at the stack's emulators (unless the variables are already set)."""
    for var, key in (("PUBSUB_EMULATOR_HOST", "pubsub"), ("FIRESTORE_EMULATOR_HOST", "firestore")):
        if info["emulators"].get(key) and not os.environ.get(var):
            os.environ[var] = info["emulators"][key]


def down(path: Path | None = None, timeout: float = 30.0) -> list[str]:
    """Stop the stack described by `path`: ask its supervisor (SIGTERM), then stop any process it left behind."""
    path = path or home() / STACK_FILE
    info = read_info(path)
    if not info:
        raise StackError(f"no stack to stop: {path} does not exist")
    stopped = []
    pid = int(info.get("supervisorPid") or 0)
    if pid and pid != os.getpid() and supervisor_alive(info):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while supervisor_alive(info) and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped.append(f"supervisor {pid}")
    for name, data in info.get("processes", {}).items():
        process = Process(**data)
        if process.alive():
            process.stop()
            stopped.append(f"{name} {process.pid}")
    for owned in info.get("emulators", {}).get("owned", []):
        process = Process.attached(f"{owned['kind']}-emulator", owned["pid"], owned["started"])
        if process.alive():
            process.stop()
            stopped.append(f"{owned['kind']} emulator {process.pid}")
    path.unlink(missing_ok=True)
    return stopped
