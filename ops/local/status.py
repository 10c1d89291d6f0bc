"""The live status view: per-region ACK p95, worker p95, requests/s, DLQ by verdict, schema compatibility,
failover events and load-balancer state, from each process's /metrics and HAProxy's stats socket."""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ops.local import haproxy, loopback, prometheus

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

ACK = "paynow_webhook_ack_seconds"
RESPONSES = "paynow_webhook_responses_total"
WORKER = "paynow_worker_processing_seconds"
EVENTS = "paynow_pipeline_events_total"
DLQ = "paynow_dlq_total"
SCHEMAS = "paynow_schema_versions_total"


def parse(text: str) -> Samples:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of a series over every label set that has the given label values."""
    return sum(v for (n, labels), v in samples.items() if n == name and _matches(labels, match))


def by_label(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name and _matches(labels, match):
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def _matches(labels: Labels, match: dict[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in match.items())


def buckets(samples: Samples, histogram: str, **match: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a histogram, summed over the matching label sets."""
    out: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n == f"{histogram}_bucket" and _matches(labels, match):
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the q-th observation."""
    if not cumulative:
        return None
    bounds = sorted(cumulative)
    count = cumulative[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative[bound]
    return bounds[-1]


def delta(new: Samples, old: Samples | None) -> Samples:
    """new - old per series; a series that went down (its process restarted) counts from zero."""
    if old is None:
        return dict(new)
    out = {}
    for key, value in new.items():
        before = old.get(key, 0.0)
        out[key] = value - before if value >= before else value
    return out


def restarted(new: Samples, old: Samples) -> bool:
    """True when the process behind two scrapes started again in between: its start time or a series' creation
    time changed, or a counter went down or vanished (a restart that counted past the old values is told only
    by the first two)."""
    for (name, labels), value in old.items():
        if name == "process_start_time_seconds" or name.endswith("_created"):
            if (name, labels) in new and new[(name, labels)] != value:
                return True
        elif name.endswith(_CUMULATIVE) and new.get((name, labels), -1.0) < value:
            return True
    return False


_CUMULATIVE = ("_bucket", "_count", "_sum", "_total")


class Increase:
    """What several processes' counters and histograms added over a stretch of time, across their restarts.

    A scrape before and one after are not enough when a process restarts in between (a local pipeline recycles
    itself past its memory bound): its counters start again from zero and the two scrapes no longer subtract.
    So a thread scrapes every `interval` seconds and adds each step's increase, taking a restarted process's
    new values whole, as Prometheus's `increase()` does; only what a process counted between its last scrape
    and its restart is missed (`restarts` says how often that happened).
    """

    def __init__(self, urls: dict[str, str], interval: float = 1.0) -> None:
        self.urls = urls
        self.interval = interval
        self.samples: Samples = {}
        self.restarts: dict[str, int] = dict.fromkeys(urls, 0)
        self.failed_scrapes: dict[str, int] = dict.fromkeys(urls, 0)
        self._last: dict[str, Samples] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-increase", daemon=True)

    def start(self) -> Increase:
        """Take the baseline scrape (before anything the caller does) and start scraping."""
        self.poll()
        self._thread.start()
        return self

    def __enter__(self) -> Increase:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take a last scrape and stop; idempotent."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
            self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        for name, url in self.urls.items():
            new = scrape(url)
            with self._lock:
                if new is None:
                    self.failed_scrapes[name] += 1
                    continue
                old = self._last.get(name)
                self._last[name] = new
                if old is None:
                    continue  # the first answer is the baseline
                if restarted(new, old):
                    self.restarts[name] += 1
                    old = None  # the new values count whole
                for key, value in delta(new, old).items():
                    if key[0].endswith(_CUMULATIVE):
                        self.samples[key] = self.samples.get(key, 0.0) + value

    def p95_ms(self, histogram: str, **match: str) -> float | None:
        """The 95th percentile of `histogram` over everything observed so far, in ms; None before any."""
        with self._lock:
            p95 = quantile(0.95, buckets(self.samples, histogram, **match))
        return None if p95 is None else p95 * 1000

    def total(self, name: str, **match: str) -> float:
        with self._lock:
            return total(self.samples, name, **match)


def scrape(url: str, timeout: float = 1.0) -> Samples | None:
    try:
        response = loopback.client().get(url, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse(response.text)


@dataclass
class Region:
    name: str
    ingress_up: bool = False
    lb_state: str = "-"
    rps: float = 0.0
    ack_p95_ms: float | None = None
    answers: dict[str, float] = field(default_factory=dict)  # status class -> count in the window
    worker_up: bool | None = None
    worker_p95_ms: float | None = None
    events_per_s: float = 0.0


@dataclass
class View:
    """One refresh of the status view."""

    at: float
    regions: list[Region]
    dlq_by_verdict: dict[str, float]
    compatibility_rate: float | None
    envelopes: float
    failover_events: int
    lb_transitions: list[str]
    window_s: float
    seed: dict[str, dict[str, float]] | None = None  # the five seed metrics by region, from Prometheus
    alerts: list[str] = field(default_factory=list)  # Prometheus' pending and firing alerts


class Collector:
    """Scrapes a running stack (its stack.json info) every poll; windowed rates and quantiles over `window` s."""

    def __init__(self, info: dict[str, Any], window: float = 10.0) -> None:
        self.info = info
        self.window = window
        self.history: deque[tuple[float, dict[str, Samples | None]]] = deque()
        self.lb_last: dict[str, str] = {}
        self.transitions: list[str] = []
        self.started = time.monotonic()

    def _sources(self) -> dict[str, str]:
        urls = {f"ingress:{r}": f"{v['url']}/metrics" for r, v in self.info.get("ingress", {}).items()}
        urls.update({f"pipeline:{r}": v["metricsUrl"] for r, v in self.info.get("pipelines", {}).items()})
        return urls

    def poll(self) -> View:
        now = time.monotonic()
        current = {name: scrape(url) for name, url in self._sources().items()}
        self.history.append((now, current))
        while len(self.history) > 2 and now - self.history[1][0] >= self.window:
            self.history.popleft()
        then, old = self.history[0]
        span = max(now - then, 1e-9)
        lb = self._lb()
        failovers = sum(s.check_down for s in lb.values())
        regions = []
        for region in self.info.get("regions", []):
            r = Region(region, lb_state=lb[region].status if region in lb else "-")
            ingress = current.get(f"ingress:{region}")
            if ingress is not None:
                r.ingress_up = True
                window = delta(ingress, old.get(f"ingress:{region}")) if then < now else ingress
                count = total(window, RESPONSES)
                r.rps = count / span if then < now else 0.0
                p95 = quantile(0.95, buckets(window, ACK))
                r.ack_p95_ms = None if p95 is None else p95 * 1000
                for status, n in by_label(window, RESPONSES, "status").items():
                    key = f"{status[:1]}xx"
                    r.answers[key] = r.answers.get(key, 0.0) + n
            if f"pipeline:{region}" in current:
                worker = current[f"pipeline:{region}"]
                r.worker_up = worker is not None
                if worker is not None:
                    window = delta(worker, old.get(f"pipeline:{region}")) if then < now else worker
                    p95 = quantile(0.95, buckets(window, WORKER))
                    r.worker_p95_ms = None if p95 is None else p95 * 1000
                    r.events_per_s = total(window, EVENTS) / span if then < now else 0.0
            regions.append(r)
        workers = [s for name, s in current.items() if name.startswith("pipeline:") and s is not None]
        dlq: dict[str, float] = {}
        compatible = seen = 0.0
        for samples in workers:
            for verdict, n in by_label(samples, DLQ, "verdict").items():
                dlq[verdict] = dlq.get(verdict, 0.0) + n
            compatible += total(samples, SCHEMAS, compatible="true")
            seen += total(samples, SCHEMAS)
        seed, alerts = prometheus.status_figures(self.info)
        return View(time.time(), regions, dict(sorted(dlq.items())), compatible / seen if seen else None, seen,
                    failovers, list(self.transitions[-6:]), span, seed, alerts)

    def _lb(self) -> dict[str, haproxy.ServerStats]:
        sock = self.info.get("lb", {}).get("statsSocket")
        if not sock:
            return {}
        try:
            stats = {s.name: s for s in haproxy.read_stats(Path(sock))}
        except haproxy.HAProxyError:
            return {}
        for name, s in stats.items():
            before = self.lb_last.get(name)
            state = s.status.split()[0]
            if before is not None and before != state:
                self.transitions.append(f"{time.strftime('%H:%M:%S')} {name} {before}→{state}")
            self.lb_last[name] = state
        return stats


def _ms(value: float | None, target: float) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(f"{value:.1f} ms", style="green" if value <= target else "bold red")


def _state(value: str) -> Text:
    style = "green" if value.startswith("UP") else "dim" if value == "-" else "bold red"
    return Text(value, style=style)


def render(view: View, info: dict[str, Any]) -> Group:
    title = (f"paynow stack · project {info.get('project')} · LB {info.get('target')} · "
             f"{time.strftime('%H:%M:%S', time.localtime(view.at))} · window {view.window_s:.0f}s")
    regions = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for column in ("region", "LB backend", "ingress", "req/s", "ACK p95", "answers", "worker", "worker p95",
                   "events/s"):
        regions.add_column(column, justify="right" if column in ("req/s", "events/s") else "left")
    for r in view.regions:
        answers = " ".join(f"{k}:{int(v)}" for k, v in sorted(r.answers.items())) or "-"
        worker = "-" if r.worker_up is None else ("up" if r.worker_up else "DOWN")
        regions.add_row(r.name, _state(r.lb_state), _state("UP" if r.ingress_up else "DOWN"), f"{r.rps:.1f}",
                        _ms(r.ack_p95_ms, 50), answers,
                        _state({"up": "UP", "DOWN": "DOWN"}.get(worker, "-")), _ms(r.worker_p95_ms, 250),
                        f"{r.events_per_s:.1f}")
    dlq = Table(title="DLQ (dead letters published, by verdict)", title_justify="left", header_style="bold")
    dlq.add_column("verdict")
    dlq.add_column("count", justify="right")
    for verdict, n in view.dlq_by_verdict.items():
        dlq.add_row(verdict, str(int(n)))
    if not view.dlq_by_verdict:
        dlq.add_row(Text("none", style="dim"), "0")
    rate = "-" if view.compatibility_rate is None else f"{view.compatibility_rate:.2%} of {int(view.envelopes)}"
    lines = [Text.assemble(("schema compatibility rate: ", "bold"), rate),
             Text.assemble(("region failover events (LB UP→DOWN): ", "bold"), str(view.failover_events)),
             *[Text(f"  {t}") for t in view.lb_transitions]]
    if view.seed is not None:
        lines.append(prometheus.seed_table(view.seed, view.alerts, [r.name for r in view.regions]))
    return Group(regions, dlq, *lines)


def live(info: dict[str, Any], *, stop: Any = None, refresh: float = 1.0) -> None:
    """Refresh the view every `refresh` s until Ctrl-C or `stop()` returns true."""
    from rich.live import Live

    collector = Collector(info)
    with Live(render(collector.poll(), info), refresh_per_second=4, screen=False) as view:
        while stop is None or not stop():
            time.sleep(refresh)
            with contextlib.suppress(Exception):  # a view refresh must never take the stack down
                view.update(render(collector.poll(), info))
