"""The GameDay drills (issue D): each drives traffic, injects its fault, waits, audits and returns its figures."""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.cloud import firestore
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ops.admin import audit, dlq
from ops.admin.catalog import KNOWN_PRODUCTS, map_customer
from ops.admin.catalog import points as points_of
from ops.load import traffic, traffic_log
from ops.local import loopback, status
from ops.local.stack import PRIMARY, SECONDARY, Stack
from pipeline.local import recycle
from schemas import ORDERING_KEYS, deliveries
from schemas.attributes import RECONCILE_SOURCE
from schemas.signing import signed_headers

NORMAL_RATE = 50.0  # webhooks/s PayNow sends on a normal day (the load drill doubles it)
DEFAULT_DURATION = {"happy": 30.0, "schema": 20.0, "webhook-failover": 30.0, "worker-failover": 30.0,
                    "load": 1200.0, "audit": 0.0, "dlq-replay": 0.0, "rollback": 30.0, "reconcile": 40.0,
                    "restore": 60.0}
NAMES = tuple(DEFAULT_DURATION)
ORDER = ("happy", "schema", "webhook-failover", "worker-failover", "load", "dlq-replay", "rollback", "reconcile",
         "restore", "audit")
ACK_P95_TARGET_MS = 50.0
WORKER_P95_TARGET_MS = 250.0
DEFAULT_DURATION["chaos"] = 90.0  # issue G, ops/load/chaos.py; not in `all` (it freezes the emulators)
DEFAULT_DURATION["hot-wallet"] = 60.0  # issue 20, ops/load/drill_hot_wallet.py; not in `all` (50/s for a minute)
NAMES = tuple(DEFAULT_DURATION)
SETTLE_TIMEOUT_S = 120.0  # > the subscription's 60 s ack deadline: a killed worker's leases must expire first
PUBLIC_MIX = {s: w for s, w in traffic.WEIGHTS.items() if not s.startswith("legacy_")}
JUDGED = (audit.LOST, audit.VERDICTS, audit.WALLETS, audit.KEY_TWICE, audit.UNCLAIMED, audit.AGGREGATES,
          audit.MODEL_WALLETS, audit.MODEL_PRESENT, audit.MODEL_EXTRA, audit.MODEL_AMOUNTS)
"""The audit checks every traffic drill reports; wallets and keys are judged by the independent model."""


@dataclass
class Figure:
    name: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: reported, not judged


@dataclass
class Result:
    name: str
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(f.ok is not False for f in self.figures)

    def add(self, name: str, value: Any, target: str = "", ok: bool | None = None) -> Figure:
        figure = Figure(name, value if isinstance(value, str) else _fmt(value), target, ok)
        self.figures.append(figure)
        return figure

    def figure(self, name: str) -> Figure:
        return next(f for f in self.figures if f.name == name)

    def table(self) -> Table:
        verdict = "[bold green]PASS[/]" if self.passed else "[bold red]FAIL[/]"
        out = Table(title=f"drill {self.name}: {verdict} ({self.seconds:.0f} s)", title_justify="left",
                    header_style="bold")
        out.add_column("figure")
        out.add_column("value", justify="right")
        out.add_column("target", overflow="fold", max_width=70)
        out.add_column("")
        for f in self.figures:
            mark = Text("-", style="dim") if f.ok is None else Text("pass", "green") if f.ok else Text("FAIL",
                                                                                                    "bold red")
            out.add_row(f.name, f.value, f.target, mark)
        if self.error:
            out.add_row("error", Text(self.error, style="red"), "", Text("FAIL", "bold red"))
        return out


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class Drills:
    """Drills against one stack (started by the caller, or attached); `run(name)` returns its Result."""

    def __init__(self, stack: Stack, *, duration: float | None = None, rate: float | None = None,
                 normal_rate: float = NORMAL_RATE, console: Console | None = None) -> None:
        self.stack = stack
        self.duration = duration
        self.rate = rate
        self.normal_rate = normal_rate
        self.console = console or Console(stderr=True)
        self.db = firestore.Client(project=stack.config.project)
        self.last_log: Path | None = None

    def close(self) -> None:
        self.db.close()

    # -- helpers -------------------------------------------------------------------------------------------
    def _duration(self, name: str) -> float:
        return self.duration if self.duration is not None else DEFAULT_DURATION[name]

    def _rate(self) -> float:
        return self.rate if self.rate is not None else self.normal_rate

    def _say(self, message: str) -> None:
        self.console.log(message)

    def send(self, name: str, *, rate: float, duration: float, weights: dict[str, int] | None = None,
             legacy: bool = False, during: Callable[[float], Awaitable[None]] | None = None,
             policy: traffic.RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None,
             users: int | None = None) -> tuple[traffic.Stats, list[dict[str, Any]]]:
        """Run the traffic generator (and `during(start)` alongside it); its stats and its records.

        `policy` is PayNow's re-sending (the generator's default unless given); `transport` sees every answer;
        `users`: that many customers and no mapped ones (default: the mix's own, and three mapped customers)."""
        run_id = uuid.uuid4().hex[:8]
        mapped = traffic.Mix.mapped_customers_for(run_id) if users is None else {}
        for customer, uid in mapped.items():
            map_customer(self.db, customer, uid)
        mix = traffic.Mix(seed=int(run_id, 16), run_id=run_id, mapped_customers=mapped,
                          weights=weights or PUBLIC_MIX, legacy=legacy, **({} if users is None else {"users": users}))
        log_path = self.stack.traffic_dir / f"{name}-{time.strftime('%H%M%S')}-{run_id}.jsonl"
        self.last_log = log_path  # where a drill appends what it did besides sending (traffic_log.append_log)
        publisher = traffic.Publisher(self.stack.info["topic"]) if legacy else None

        async def main() -> traffic.Stats:
            started = time.monotonic()
            sending = asyncio.create_task(traffic.run(
                target=self.stack.info["target"], secret=self.stack.secret, rate=rate, duration=duration,
                log_path=log_path, mix=mix, publisher=publisher, policy=policy, transport=transport))
            if during is not None:
                await during(started)
            return await sending

        self._say(f"{name}: sending {rate:g}/s for {duration:g} s to {self.stack.info['target']}")
        stats = asyncio.run(main())
        return stats, traffic_log.read_log(log_path, compact=name == "load")  # a load run's deliveries, as text

    def settle(self, records: list[dict[str, Any]], timeout: float = SETTLE_TIMEOUT_S) -> tuple[int, float]:
        return audit.wait_accounted(self.db, records, timeout)

    def audit_records(self, records: list[dict[str, Any]]) -> audit.Report:
        return audit.run(self.db, traffic=records)

    def _common(self, result: Result, stats: traffic.Stats, records: list[dict[str, Any]]) -> audit.Report:
        """Figures every traffic drill reports: failures as PayNow saw them, processing, the audit."""
        result.add("webhooks sent", stats.sent)
        result.add("failed webhooks (no 2xx after PayNow's retries)", stats.failed, "0", stats.failed == 0)
        result.add("webhooks re-sent after a non-2xx answer", stats.retried)
        missing, waited = self.settle(records)
        result.add("accepted events processed (webhookEvents or DLQ)", f"{missing} missing after {waited:.1f} s",
                   "0 missing", missing == 0)
        report = self.audit_records(records)
        for name in JUDGED:
            check = report.get(name)
            result.add(f"audit: {name}", check.value, check.detail, check.ok)
        return report

    def _shares(self, records: list[dict[str, Any]], since_ms: int = 0, until_ms: int | None = None
                ) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in records:
            if r["kind"] != "webhook" or not r["ok"]:
                continue
            at = r["attempts"][-1]["at"]
            if at >= since_ms and (until_ms is None or at < until_ms):
                out[r["region"]] = out.get(r["region"], 0) + 1
        return out

    def _worker_samples(self) -> dict[str, status.Samples | None]:
        return {r: status.scrape(v["metricsUrl"]) for r, v in self.stack.info["pipelines"].items()}

    def _watch_workers(self) -> status.Increase:
        """The pipelines' metrics added up from now until stopped, across their restarts (memory recycling)."""
        return status.Increase({r: v["metricsUrl"] for r, v in self.stack.info["pipelines"].items()})

    def _watch_ingresses(self) -> status.Increase:
        return status.Increase({r: v["url"] + "/metrics" for r, v in self.stack.info["ingress"].items()})

    @staticmethod
    def _add_worker_p95(result: Result, workers: status.Increase, judged: bool = True, why: str = "") -> None:
        p95 = workers.p95_ms(status.WORKER)
        target = f"≤ {WORKER_P95_TARGET_MS:g} ms{why}"
        result.add("worker p95 (publish → commit)", "-" if p95 is None else f"{p95:.0f} ms", target,
                   (p95 is not None and p95 <= WORKER_P95_TARGET_MS) if judged else None)
        restarts = sum(workers.restarts.values())
        if restarts:
            result.add("pipeline restarts while measured (memory recycling or a kill)", restarts)

    def _lb_status(self, region: str) -> str:
        return next((s.status for s in self.stack.lb_stats() if s.name == region), "?")

    async def _until_out(self, region: str, since: float, timeout: float = 30) -> float:
        """The time the load balancer took `region` out of rotation (polled every 50 ms from `since`)."""
        while self._lb_status(region).startswith("UP") and time.time() - since < timeout:
            await asyncio.sleep(0.05)
        return time.time()

    # -- the drills ----------------------------------------------------------------------------------------
    def run(self, name: str) -> Result:
        if name not in NAMES:
            raise ValueError(f"unknown drill {name!r}; drills: {', '.join(ORDER)}")
        result = Result(name)
        started = time.monotonic()
        try:
            getattr(self, "drill_" + name.replace("-", "_"))(result)
        except Exception as exc:  # a drill that cannot finish fails with its reason, the others still run
            result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - started
        return result

    def drill_reconcile(self, result: Result) -> None:
        from ops.load.drill_reconcile import drill_reconcile  # issue K: blackout, PayNow gives up, reconcile

        drill_reconcile(self, result, duration=self._duration("reconcile"), rate=self._rate())
        if self.last_log is not None:
            self._log_recovered(self.last_log)

    def drill_restore(self, result: Result) -> None:
        from ops.load.drill_restore import drill_restore  # RUNBOOK "Restoring the ledger" under traffic

        drill_restore(self, result, duration=self._duration("restore"), rate=self._rate())

    def _log_recovered(self, log: Path) -> None:
        """Record in the run's log which deliveries PayNow gave up on were published by the reconciler since (their
        webhookEvents say source "reconcile"), so the audit's model sees them as the pipeline did."""
        records = traffic_log.read_log(log, compact=True)
        delivered = {r["eventId"] for r in records if r.get("kind") == "webhook" and r.get("ok")}
        failed = sorted({r["eventId"] for r in records if r.get("kind") == "webhook"} - delivered)
        recovered = []
        for i in range(0, len(failed), 300):
            refs = [self.db.collection("webhookEvents").document(e) for e in failed[i:i + 300]]
            recovered += [s.id for s in self.db.get_all(refs) if s.exists and (s.to_dict() or {}).get("source")
                          == RECONCILE_SOURCE]
        if recovered:
            traffic_log.append_log(log, {"kind": "recovered", "eventIds": sorted(recovered)})

    def drill_happy(self, result: Result) -> None:
        stats, records = self.send("happy", rate=self._rate(), duration=self._duration("happy"))
        shares = self._shares(records)
        total = sum(shares.values()) or 1
        for region in self.stack.config.regions:
            share = shares.get(region, 0) / total
            result.add(f"share acknowledged by {region}", f"{share:.1%}", "> 25 %", share > 0.25)
        self._common(result, stats, records)

    def drill_schema(self, result: Result) -> None:
        weights = {"order": 2, "legacy_v1": 1, "legacy_v2": 1}
        with self._watch_workers() as workers:
            stats, records = self.send("schema", rate=self._rate(), duration=self._duration("schema"),
                                       weights=weights, legacy=True)
            self._common(result, stats, records)
        v1 = {r["eventId"] for r in records if r.get("scenario") == "legacy_v1"}
        v2 = {r["eventId"] for r in records if r.get("scenario") == "legacy_v2"}
        dead = dlq.unresolved(self.db)
        v1_ok = sum(1 for e in v1 if dead.get(e) == "drop_incompatible")
        result.add("v1 published onto the topic", len(v1), "> 0", len(v1) > 0)
        result.add("v1 in the DLQ as drop_incompatible", f"{v1_ok}/{len(v1)}", "all", v1_ok == len(v1))
        refs = [self.db.collection("webhookEvents").document(e) for e in sorted(v2)]
        applied = sum(1 for s in self.db.get_all(refs) if s.exists and (s.to_dict() or {}).get("status") == "applied")
        result.add("v2 published onto the topic", len(v2), "> 0", len(v2) > 0)
        result.add("v2 accepted and credited", f"{applied}/{len(v2)}", "all", applied == len(v2))
        compatible, seen = workers.total(status.SCHEMAS, compatible="true"), workers.total(status.SCHEMAS)
        rate = compatible / seen if seen else 0.0
        expected = 1 - len(v1) / seen if seen else 0.0
        result.add("schema compatibility rate (pipeline metrics)", f"{rate:.2%} of {int(seen)}",
                   f"≈ {expected:.2%} (1 − v1 share)", seen > 0 and abs(rate - expected) < 0.02)

    def drill_webhook_failover(self, result: Result) -> None:
        from ops.load.drill_failover import drill_webhook_failover  # kill -9 an ingress: the LB fails over

        drill_webhook_failover(self, result)

    def drill_worker_failover(self, result: Result) -> None:
        from ops.load.drill_failover import drill_worker_failover  # kill -9 the primary pipeline: the standby commits

        drill_worker_failover(self, result)

    def drill_hot_wallet(self, result: Result) -> None:
        from ops.load.drill_hot_wallet import HOT_RATE, drill_hot_wallet  # issue 20: one wallet at 50/s

        drill_hot_wallet(self, result, duration=self._duration("hot-wallet"),
                         rate=self.rate if self.rate is not None else HOT_RATE)

    def drill_chaos(self, result: Result) -> None:
        from ops.load.chaos import drill_chaos  # issue G: kills and emulator freezes under traffic

        drill_chaos(self, result)

    def drill_load(self, result: Result) -> None:
        """2 × normal rate: ACK and worker p95 against their targets, memory of every process bounded."""
        rate = self.rate if self.rate is not None else 2 * self.normal_rate
        duration = self._duration("load")
        memory: dict[str, list[int]] = {}
        threads: dict[str, list[int]] = {}
        peak: dict[str, int] = {}
        watched = {**self.stack.processes, **{f"{e.kind}-emulator": e.process for e in self.stack.emulators
                                              if e.process is not None}}

        def first() -> None:
            for name, process in watched.items():
                if process.alive():
                    memory[name], threads[name] = [process.rss_bytes()], [process.threads()]

        def peaks() -> None:
            for name in memory:
                peak[name] = max(peak.get(name, 0), watched[name].rss_bytes())

        def last() -> None:
            for name in memory:
                memory[name].append(watched[name].rss_bytes())
                threads[name].append(watched[name].threads())

        async def sample(started: float) -> None:
            # Each reading walks the machine's process table: in a thread, so the sender's loop never waits on it.
            await asyncio.sleep(min(10.0, duration / 10))  # after warm-up
            await asyncio.to_thread(first)
            while time.monotonic() < started + duration - 0.5:
                await asyncio.to_thread(peaks)
                await asyncio.sleep(min(1.0, max(0.0, started + duration - 0.5 - time.monotonic())))
            await asyncio.to_thread(last)

        with self._watch_ingresses() as ingresses, self._watch_workers() as workers:
            stats, records = self.send("load", rate=rate, duration=duration, during=sample)
            ingresses.stop()
            result.add("offered rate", f"{rate:g}/s for {duration:g} s", f"2 × normal ({self.normal_rate:g}/s)")
            result.add("achieved rate", f"{stats.sent / duration:.1f}/s", f"≥ {0.9 * rate:.0f}/s",
                       stats.sent / duration >= 0.9 * rate)
            self._common(result, stats, records)
        ack = ingresses.p95_ms(status.ACK)
        result.add("webhook ACK p95 (ingress histogram)", "-" if ack is None else f"{ack:.1f} ms",
                   f"≤ {ACK_P95_TARGET_MS:g} ms", ack is not None and ack <= ACK_P95_TARGET_MS)
        result.add("answer p95 as the sender saw it (incl. LB and client)", f"{stats.p95():.1f} ms")
        self._add_worker_p95(result, workers)
        bound = recycle.limit_mb({**os.environ, **self.stack.processes[f"pipeline-{PRIMARY}"].env})
        for name, (start, *end) in sorted(memory.items()):
            if not end:
                continue
            shown = f"{start / 2**20:.0f} → {end[0] / 2**20:.0f} MiB (peak {peak.get(name, end[0]) / 2**20:.0f})"
            if name.startswith("pipeline-"):
                # Judged on the peak, not the end: past its bound a worker recycles itself (pipeline/local/recycle.py,
                # a safety net since Beam's metrics chain no longer grows: pipeline/local/runner.py), and a recycled
                # worker ends small. Beam's leak reached the 2 GiB bound every 2-3 minutes of this drill.
                growth = peak.get(name, end[0]) - start
                limit = start * 0.25 + 32 * 2**20
                result.add(f"RSS {name} (start → end)", shown,
                           f"peak growth ≤ 25 % + 32 MiB{f' (recycles at {bound})' if bound else ''}", growth <= limit)
            elif name.endswith("-emulator"):
                # The Firestore emulator holds the whole database in memory and both are JVMs whose heap grows
                # on demand, so their RSS is shown, not judged; what grew without bound was the Pub/Sub emulator's
                # threads, one per ordering key it has seen (the keys are a bounded set: schemas.ordering_key).
                result.add(f"RSS {name} (start → end)", shown)
            else:
                growth = end[0] - start
                limit = start * 0.25 + 32 * 2**20
                result.add(f"RSS {name} (start → end)", shown, "growth ≤ 25 % + 32 MiB", growth <= limit)
        for name, (start_threads, *end_threads) in sorted(threads.items()):
            if not end_threads:
                continue
            shown = f"{start_threads} → {end_threads[0]}"
            if name == "pubsub-emulator":  # at most a thread for each key not yet seen at the start, and its pools
                slack = ORDERING_KEYS + 16
                result.add(f"threads {name} (start → end)", shown, f"growth ≤ {slack}",
                           end_threads[0] - start_threads <= slack)
            else:
                result.add(f"threads {name} (start → end)", shown)

    def drill_audit(self, result: Result) -> None:
        records: list[dict[str, Any]] = []
        for log in sorted(self.stack.traffic_dir.glob("*.jsonl")):
            records.extend(traffic_log.read_log(log, compact=True))
        if records:
            self.settle(records, timeout=60)
        report = self.audit_records(records) if records else audit.run(self.db)
        result.add("traffic logs audited", len(list(self.stack.traffic_dir.glob("*.jsonl"))))
        for check in report.checks:
            result.add(f"audit: {check.name}", check.value, check.detail, check.ok)
        planted = plant_drift(self.stack.config.project)
        result.add("planted drifts detected (scratch project)", f"{planted[0]}/{planted[1]}", "all",
                   planted[0] == planted[1])

    def drill_dlq_replay(self, result: Result) -> None:
        """An unmapped customer's order is dead-lettered, mapped, replayed (credited once), replayed again (nothing).

        Everything is recorded as a traffic log (the delivery and its answer, the mapping, the replays), so the
        audit drill's independent model expects exactly this.
        """
        run = uuid.uuid4().hex[:8]
        customer, uid = f"cus_replay_{run}", f"user_replay_{run}"
        product = "458255787102310400"
        points = KNOWN_PRODUCTS[product]["points"]
        event_id = f"evt_replay_{run}"
        delivery = deliveries.order_completed(event_id, f"ord_replay_{run}", customer,
                                              [deliveries.order_line(f"line_replay_{run}", product, 2)])
        log = self.stack.traffic_dir / f"dlq-replay-{time.strftime('%H%M%S')}-{run}.jsonl"
        recorder = traffic_log.Recorder(log)
        recorder.write({"kind": "run", "runId": run, "catalog": points_of(KNOWN_PRODUCTS), "customers": {}})
        body = deliveries.encode(delivery)
        response = httpx.post(self.stack.info["target"] + traffic.WEBHOOK_PATH, content=body,
                              headers=signed_headers(self.stack.secret, body), timeout=10)
        ok = 200 <= response.status_code < 300
        recorder.write({"kind": "webhook", "scenario": "dlq_replay", "eventId": event_id,
                        "eventType": delivery["event_type"], "customerId": customer, "uid": None,
                        "delivery": delivery, "sentAt": int(time.time() * 1000), "status": response.status_code,
                        "region": _json(response).get("region"), "ok": ok,
                        "attempts": [{"status": response.status_code, "at": int(time.time() * 1000)}]})
        result.add("purchase by an unmapped customer accepted", response.status_code, "2xx", ok)
        flt = dlq.Filter(verdicts=frozenset({"unmapped_customer"}), states=frozenset({"open"}),
                         event_ids=frozenset({event_id}))
        store = dlq.FirestoreLetters(self.db)
        started = time.monotonic()
        while not dlq.select(store, flt, now_ms=int(time.time() * 1000)) and time.monotonic() - started < 30:
            time.sleep(0.5)
        found = dlq.select(store, flt, now_ms=int(time.time() * 1000))
        result.add("recorded as an open unmapped_customer dead letter",
                   f"{len(found)} after {time.monotonic() - started:.1f} s", "1", len(found) == 1)
        map_customer(self.db, customer, uid)
        recorder.write({"kind": "mapping", "customerId": customer, "uid": uid})
        publish = dlq.PubSubPublish(self.stack.info["topic"])
        replayed = dlq.replay(store, publish, dlq.Filter(verdicts=frozenset({"unmapped_customer"})),
                              now_ms=int(time.time() * 1000))
        recorder.write({"kind": "replay", "eventIds": [x.event_id for x in replayed.replayed]})
        mine = [x for x in replayed.replayed if x.event_id == event_id]
        result.add("replayed (paynow dlq replay --verdict unmapped_customer)",
                   f"{len(mine)} (of {len(replayed.replayed)} replayed)", "1", len(mine) == 1)
        expected = 2 * points
        balance, waited = self._wait_balance(uid, expected, 30)
        result.add("credited after replay", f"{balance} points after {waited:.1f} s", str(expected),
                   balance == expected)
        if mine:  # an operator replays the same record again
            dlq.republish(mine[0], publish, int(time.time() * 1000))
            recorder.write({"kind": "replay", "eventIds": [event_id]})
            time.sleep(5)
        recorder.close()
        balance, _ = self._wait_balance(uid, expected, 1)
        entries = list(self.db.collection("users").document(uid).collection("ledger").stream())
        result.add("balance after replaying it again", balance, str(expected), balance == expected)
        result.add("ledger entries for the order", len(entries), "1", len(entries) == 1)

    def _wait_balance(self, uid: str, expected: int, timeout: float) -> tuple[int, float]:
        started = time.monotonic()
        wallet = self.db.collection("users").document(uid).collection("wallet").document("points")
        while True:
            snap = wallet.get()
            balance = int((snap.to_dict() or {}).get("paidBalance", 0)) if snap.exists else 0
            if balance == expected or time.monotonic() - started > timeout:
                return balance, time.monotonic() - started
            time.sleep(0.3)

    def drill_rollback(self, result: Result) -> None:
        duration = max(self._duration("rollback"), 30.0)  # each restart takes 5-8 s under load: drain, start, 2 checks
        marks: dict[str, float] = {}
        name = f"ingress-{SECONDARY}"
        readyz: dict[str, int] = {}

        async def switch(started: float) -> None:
            await asyncio.sleep(duration / 5)
            self._say(f"rollback: restart {SECONDARY} with MULTI_REGION_ENABLED=false")
            marks["off"] = time.time()
            watch = asyncio.create_task(self._until_out(SECONDARY, marks["off"]))
            await asyncio.to_thread(self.stack.restart, name, {"MULTI_REGION_ENABLED": "false"}, wait=False)
            marks["out"] = await watch
            readyz["off"] = await asyncio.to_thread(self._readyz, SECONDARY)
            # back on at 40 %: a restart under load takes up to ~8 s before HAProxy counts it UP again, and the
            # drill must still see answers from it after that, before the sending ends
            await asyncio.sleep(max(2.0, started + duration * 0.4 - time.monotonic()))
            self._say(f"rollback: restart {SECONDARY} with MULTI_REGION_ENABLED=true")
            marks["on"] = time.time()
            await asyncio.to_thread(self.stack.restart, name, {"MULTI_REGION_ENABLED": "true"})
            await asyncio.to_thread(self.stack.wait_lb, {PRIMARY, SECONDARY}, 30)
            marks["back"] = time.time()

        try:
            stats, records = self.send("rollback", rate=self._rate(), duration=duration, during=switch)
        finally:
            if self.stack.processes[name].env.get("MULTI_REGION_ENABLED") != "true":
                self.stack.restart(name, {"MULTI_REGION_ENABLED": "true"})
        self._common(result, stats, records)
        took = marks["out"] - marks["off"]
        result.add(f"{SECONDARY} out of rotation after the switch", f"{took:.2f} s", "≤ 5 s", took <= 5)
        result.add(f"{SECONDARY} /readyz with MULTI_REGION_ENABLED=false", readyz.get("off", 0), "503",
                   readyz.get("off") == 503)
        during = self._shares(records, int(marks["out"] * 1000), int(marks["on"] * 1000))
        result.add(f"answers by {SECONDARY} while rolled back", during.get(SECONDARY, 0), "0",
                   during.get(SECONDARY, 0) == 0)
        result.add(f"answers by {PRIMARY} while rolled back", during.get(PRIMARY, 0), "> 0", during.get(PRIMARY, 0) > 0)
        result.add(f"{SECONDARY} back in rotation after turning it on", f"{marks['back'] - marks['on']:.2f} s")
        after = self._shares(records, int(marks["back"] * 1000))
        result.add(f"answers by {SECONDARY} after turning it back on", after.get(SECONDARY, 0), "> 0",
                   after.get(SECONDARY, 0) > 0)

    def _readyz(self, region: str, timeout: float = 30) -> int:
        """/readyz of a (re)starting ingress, once it answers at all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return loopback.client().get(self.stack.ingress_url(region) + "/readyz", timeout=1).status_code
            except httpx.HTTPError:
                time.sleep(0.1)
        return 0


def plant_drift(project: str) -> tuple[int, int]:
    """Plant three drifts in a scratch project (a key credited to two users, a wallet off by one, an order aggregate
    inconsistent with its entries) and count how many the auditor reports, each by its own check: (found, planted)."""
    scratch = firestore.Client(project=f"{project[:20]}-drift-{uuid.uuid4().hex[:4]}")
    try:
        def credit(uid: str, key: str, amount: int, event_id: str, claim: bool = True) -> None:
            scratch.document(f"users/{uid}/ledger/{key}").set({"amount": amount, "eventId": event_id,
                                                                "createdAt": firestore.SERVER_TIMESTAMP})
            if claim:
                scratch.document(f"ledgerKeys/{key}").set({"uid": uid, "eventId": event_id, "amount": amount})
            scratch.document(f"webhookEvents/{event_id}").set({"uid": uid, "status": "applied", "entryIds": [key]})

        def order(order_id: str, uid: str, amount: int, entries: list[str], **flags: bool) -> None:
            scratch.document(f"orders/{order_id}").set({
                "uid": uid, "amount": amount, "purchased": True, "reversalCause": False, "refunded": False,
                "won": False, **flags, "entries": entries})

        credit("u1", "purchase:o1", 50, "e1")
        credit("u2", "purchase:o1", 50, "e1-copy", claim=False)  # the same key credited a second time
        order("o1", "u1", 50, ["purchase:o1"])
        credit("u3", "purchase:o3", 20, "e3")
        order("o3", "u3", 20, ["purchase:o3"])
        credit("u4", "purchase:o4", 20, "e4")
        credit("u4", "reversal:o4", -20, "e5")
        order("o4", "u4", 20, ["purchase:o4", "reversal:o4"])  # reversalCause missing: not consistent
        for uid, balance in (("u1", 50), ("u2", 50), ("u3", 21), ("u4", 0)):  # u3: off by one
            scratch.document(f"users/{uid}/wallet/points").set({"paidBalance": balance})
        report = audit.run(scratch)
        found = sum((not report.get(name).ok) and marker in report.get(name).detail for name, marker in (
            (audit.KEY_TWICE, "purchase:o1"), (audit.WALLETS, "u3: wallet 21"), (audit.AGGREGATES, "o4: reversal")))
        return found, 3
    finally:
        scratch.close()


def run_drills(stack: Stack, names: list[str], *, duration: float | None = None, rate: float | None = None,
               normal_rate: float = NORMAL_RATE, console: Console | None = None) -> list[Result]:
    console = console or Console()
    drills = Drills(stack, duration=duration, rate=rate, normal_rate=normal_rate, console=console)
    results = []
    try:
        for name in names:
            result = drills.run(name)
            console.print(result.table())
            results.append(result)
    finally:
        drills.close()
    if len(results) > 1:
        summary = Table(title="drills", title_justify="left", header_style="bold")
        summary.add_column("drill")
        summary.add_column("result")
        summary.add_column("seconds", justify="right")
        for r in results:
            summary.add_row(r.name, "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]", f"{r.seconds:.0f}")
        console.print(summary)
    return results
