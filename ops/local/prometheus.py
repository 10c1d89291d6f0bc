"""The local stack's Prometheus: its config (scrape both ingresses, both pipelines, HAProxy), the rules, queries."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from ops.local import loopback
from ops.local.emulators import LOOPBACK, free_port
from ops.local.process import Process, http_ok

if TYPE_CHECKING:
    from ops.local.stack import Stack

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"  # production rules: the tested source of truth
CONSOLES = Path(__file__).resolve().parent / "consoles"
DASHBOARD = "paynow.html"
SCRAPE_INTERVAL = "2s"
# The local stack keeps the production expressions but waits 1/60 of each `for:` (5 min -> 5 s), so a drill of
# half a minute sees its alert go pending and fire; tests/prometheus proves the production durations.
LOCAL_FOR_DIVISOR = 60
SEED_METRICS = ("webhook_ack_p95_by_region", "worker_processing_p95_by_region", "dlq_depth_by_region",
                "schema_compatibility_rate", "region_failover_events")
OUTAGE_ALERT = "PaynowRegionOutage"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PrometheusError(RuntimeError):
    """Prometheus is missing, rejected its config, or did not answer a query."""


def executable(name: str = "prometheus") -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"{name} not found on PATH (Debian: apt-get install prometheus; "
                              "scripts/install-system-deps.sh installs it)")
    return path


def seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"unsupported duration {duration!r}")
    return int(match[1]) * _SECONDS[match[2]]


def local_rules(source: Path = RULES, divisor: int = LOCAL_FOR_DIVISOR) -> dict[str, Any]:
    """The production rules with every `for:` divided by `divisor` (at least 1 s); expressions untouched."""
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{max(1, seconds(rule['for']) // divisor)}s"
    return dict(doc)


def render_config(*, ingress: dict[str, str], pipelines: dict[str, str], haproxy: str | None, rules: Path,
                  interval: str = SCRAPE_INTERVAL) -> str:
    """prometheus.yml: one job per kind of process; each target labelled with its region.

    `ingress` and `pipelines` map region -> metrics URL, `haproxy` is its exporter URL. The services label their
    own samples with `region` (honor_labels keeps theirs); HAProxy's ingress servers are named after their
    regions, so `server` is copied to `region` for the `ingress` backend.
    """
    def job(name: str, urls: dict[str, str], **extra: Any) -> dict[str, Any]:
        configs = []
        for region, url in sorted(urls.items()):
            parsed = httpx.URL(url)
            configs.append({"targets": [f"{parsed.host}:{parsed.port}"], "labels": {"region": region}})
        path = httpx.URL(next(iter(urls.values()))).path if urls else "/metrics"
        return {"job_name": name, "metrics_path": path, "honor_labels": True, "static_configs": configs, **extra}

    jobs = [job("ingress", ingress), job("pipeline", pipelines)]
    if haproxy:
        parsed = httpx.URL(haproxy)
        jobs.append({"job_name": "haproxy", "metrics_path": parsed.path,
                     "static_configs": [{"targets": [f"{parsed.host}:{parsed.port}"]}],
                     "metric_relabel_configs": [{"source_labels": ["proxy", "server"], "regex": "ingress;(.+)",
                                                 "target_label": "region", "replacement": "$1"}]})
    config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
              "rule_files": [str(rules)], "scrape_configs": jobs}
    return json.dumps(config, indent=2)  # JSON is YAML, and needs no quoting rules


def check(config: Path) -> None:
    """`promtool check config` (which also checks the rule files it names)."""
    result = subprocess.run([executable("promtool"), "check", "config", str(config)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise PrometheusError(f"promtool rejected {config}:\n{result.stdout}{result.stderr}")


def command(config: Path, data: Path, port: int) -> list[str]:
    return [executable(), f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--web.listen-address={LOOPBACK}:{port}", f"--web.console.templates={CONSOLES}",
            f"--web.console.libraries={CONSOLES / 'lib'}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]


def start(stack: Stack) -> None:
    """Write the config and rules under $PAYNOW_HOME/prometheus, start Prometheus, wait for it, record its URLs."""
    from ops.local.stack import StackError

    home = stack.home / "prometheus"
    data = home / "data"
    shutil.rmtree(data, ignore_errors=True)  # a fresh TSDB: no series of an earlier stack's processes
    home.mkdir(parents=True, exist_ok=True)
    rules = home / "rules.yml"
    rules.write_text("# Generated by `paynow up` from deploy/prometheus/rules.yml; `for:` divided by "
                     f"{LOCAL_FOR_DIVISOR}.\n" + yaml.safe_dump(local_rules(), sort_keys=False, width=200))
    lb = stack.info.get("lb", {}).get("statsUrl")
    config = home / "prometheus.yml"
    config.write_text(render_config(
        ingress={n.removeprefix("ingress-"): stack.ingress_url(n.removeprefix("ingress-")) + "/metrics"
                 for n in stack.processes if n.startswith("ingress-")},
        pipelines={n.removeprefix("pipeline-"): stack.metrics_url(n.removeprefix("pipeline-"))
                   for n in stack.processes if n.startswith("pipeline-")},
        haproxy=lb.removesuffix("/stats") + "/metrics" if lb else None, rules=rules))
    try:
        check(config)
    except PrometheusError as exc:
        raise StackError(str(exc)) from None
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    stack.processes["prometheus"] = process = Process("prometheus", command(config, data, port), {},
                                                      str(stack.logs / "prometheus.log"))
    process.start()
    stack.info["prometheus"] = {"url": url, "dashboard": f"{url}/consoles/{DASHBOARD}", "config": str(config),
                                "rules": str(rules)}
    stack._wait(lambda: http_ok(f"{url}/-/ready"), "prometheus /-/ready", process, 30)


# -- reading it ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


def query(url: str, expr: str, *, timeout: float = 2.0) -> list[Sample]:
    """An instant query, as an operator would type it in the expression browser."""
    try:
        response = loopback.client().get(f"{url}/api/v1/query", params={"query": expr}, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"query {expr!r}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"query {expr!r}: {body.get('error', body)}")
    return [Sample(dict(r["metric"]), float(r["value"][1])) for r in body["data"]["result"]]


def by_region(url: str, expr: str) -> dict[str, float]:
    """{region: value} of an expression (summed over any other label)."""
    out: dict[str, float] = {}
    for sample in query(url, f"sum by (region) ({expr})"):
        out[sample.labels.get("region", "")] = sample.value
    return out


def seed_metrics(url: str) -> dict[str, dict[str, float]]:
    """The five seed metrics by region, from the recording rules."""
    return {name: by_region(url, name) for name in SEED_METRICS}


def alerts(url: str, *, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Active (pending or firing) alerts: name, labels, state, activeAt."""
    try:
        body = loopback.client().get(f"{url}/api/v1/alerts", timeout=timeout).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"alerts: {exc}") from None
    return [{"name": a["labels"].get("alertname", ""), "labels": a["labels"], "state": a["state"],
             "activeAt": a.get("activeAt", "")} for a in body["data"]["alerts"]]


def alert_state(url: str, name: str, **labels: str) -> str:
    """'firing', 'pending' or 'inactive' for one alert (and label values)."""
    states = {a["state"] for a in alerts(url)
              if a["name"] == name and all(a["labels"].get(k) == v for k, v in labels.items())}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


async def watch_alert(url: str, name: str, timeline: list[tuple[float, str]], *, every: float = 0.5,
                      **labels: str) -> None:
    """Append (time, state) to `timeline` whenever the alert's state changes, until cancelled."""
    last = None
    while True:
        try:
            state = await asyncio.to_thread(alert_state, url, name, **labels)
        except PrometheusError:
            state = "unknown"
        if state != last:
            timeline.append((time.time(), state))
            last = state
        await asyncio.sleep(every)


# -- what the status view and the drills show --------------------------------------------------------------

def status_figures(info: dict[str, Any]) -> tuple[dict[str, dict[str, float]] | None, list[str]]:
    """(seed metrics by region, active alerts as "name{region} state") of a stack; (None, []) without Prometheus."""
    url = info.get("prometheus", {}).get("url")
    if not url:
        return None, []
    try:
        active = [f"{a['name']}{{{a['labels'].get('region', '')}}} {a['state']}" for a in alerts(url)]
        return seed_metrics(url), sorted(active)
    except PrometheusError:
        return None, ["Prometheus did not answer"]


def seed_table(seed: dict[str, dict[str, float]], active: list[str], regions: list[str]) -> Any:
    """The five seed metrics by region (rows: metrics), titled with the active alerts."""
    from rich.table import Table

    units = {"webhook_ack_p95_by_region": (1000, "{:.1f} ms"), "worker_processing_p95_by_region": (1000, "{:.0f} ms"),
             "dlq_depth_by_region": (1, "{:.0f}"), "schema_compatibility_rate": (100, "{:.2f} %"),
             "region_failover_events": (1, "{:.0f}")}
    title = "seed metrics from Prometheus (deploy/prometheus/rules.yml) · alerts: " + (", ".join(active) or "none")
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("metric")
    for region in regions:
        table.add_column(region, justify="right")
    for name in SEED_METRICS:
        scale, fmt = units[name]
        cells = []
        for region in regions:
            value = seed.get(name, {}).get(region)
            cells.append("-" if value is None or value != value else fmt.format(value * scale))
        table.add_row(name, *cells)
    return table


def failover_count(url: str, region: str) -> float:
    return by_region(url, "region_failover_events").get(region, 0.0)


def drill_figures(result: Any, url: str, region: str, before: float, timeline: list[tuple[float, str]],
                  since: float, wait: float = 10.0) -> None:
    """The webhook-failover drill's Prometheus figures: the failover count went up, the outage alert was raised."""
    deadline = time.monotonic() + wait  # the last scrape and rule evaluation may still be on their way
    after = failover_count(url, region)
    while after <= before and time.monotonic() < deadline:
        time.sleep(0.5)
        after = failover_count(url, region)
    result.add(f"region_failover_events{{region={region}}} (Prometheus)", f"{before:.0f} → {after:.0f}", "+ ≥ 1",
               after >= before + 1)
    states = [state for _, state in timeline]
    shown = ", ".join(f"+{at - since:.1f}s {state}" for at, state in timeline) or "-"
    result.add(f"{OUTAGE_ALERT}{{region={region}}} after the kill (local for: ÷{LOCAL_FOR_DIVISOR})", shown,
               "pending or firing, then resolved", ("pending" in states or "firing" in states))
