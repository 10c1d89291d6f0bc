"""Metrics parsing and the quantiles, rates and view the live status computes."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from rich.console import Console

from ops.local import loopback, status

TEXT = """\
# TYPE paynow_webhook_ack_seconds histogram
paynow_webhook_ack_seconds_bucket{le="0.01",outcome="accepted",region="us-central1"} 50.0
paynow_webhook_ack_seconds_bucket{le="0.05",outcome="accepted",region="us-central1"} 90.0
paynow_webhook_ack_seconds_bucket{le="0.1",outcome="accepted",region="us-central1"} 100.0
paynow_webhook_ack_seconds_bucket{le="+Inf",outcome="accepted",region="us-central1"} 100.0
paynow_webhook_ack_seconds_count{outcome="accepted",region="us-central1"} 100.0
paynow_webhook_ack_seconds_sum{outcome="accepted",region="us-central1"} 1.5
# TYPE paynow_webhook_responses_total counter
paynow_webhook_responses_total{reason="accepted",region="us-central1",status="202"} 95.0
paynow_webhook_responses_total{reason="draining",region="us-central1",status="503"} 5.0
"""


def test_parse_and_sum_series() -> None:
    samples = status.parse(TEXT)
    assert status.total(samples, status.RESPONSES) == 100
    assert status.total(samples, status.RESPONSES, status="503") == 5
    assert status.by_label(samples, status.RESPONSES, "status") == {"202": 95, "503": 5}


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    cumulative = status.buckets(status.parse(TEXT), status.ACK)
    assert cumulative == {0.01: 50, 0.05: 90, 0.1: 100, float("inf"): 100}
    assert status.quantile(0.5, cumulative) == pytest.approx(0.01)
    assert status.quantile(0.95, cumulative) == pytest.approx(0.075)  # halfway through the 0.05..0.1 bucket
    assert status.quantile(0.95, {}) is None
    assert status.quantile(0.95, {0.1: 0, float("inf"): 0}) is None
    assert status.quantile(0.99, {0.1: 0, float("inf"): 10}) == 0.1  # all above the last finite bound


def test_delta_counts_a_restarted_process_from_zero() -> None:
    old = {("c", ()): 10.0, ("d", ()): 5.0}
    assert status.delta({("c", ()): 15.0, ("d", ()): 2.0}, old) == {("c", ()): 5.0, ("d", ()): 2.0}
    assert status.delta({("c", ()): 1.0}, None) == {("c", ()): 1.0}


def test_the_view_renders_every_section() -> None:
    view = status.View(at=0, regions=[status.Region("us-central1", True, "UP", 12.5, 7.5, {"2xx": 100}, True, 80.0,
                                                    12.0),
                                      status.Region("europe-west1", False, "DOWN", 0.0, None, {}, False)],
                       dlq_by_verdict={"drop_incompatible": 3}, compatibility_rate=0.97, envelopes=100,
                       failover_events=2, lb_transitions=["12:00:00 europe-west1 UP→DOWN"], window_s=10)
    console = Console(width=160, record=True)
    console.print(status.render(view, {"project": "p", "target": "http://lb"}))
    text = console.export_text()
    for expected in ("us-central1", "europe-west1", "7.5 ms", "80.0 ms", "drop_incompatible", "97.00% of 100",
                     "failover events (LB UP→DOWN): 2", "europe-west1 UP→DOWN", "DOWN"):
        assert expected in text, expected



class _Processes:
    """Processes whose histograms are real prometheus_client ones; `restart` gives one a fresh registry."""

    def __init__(self, names: list[str]) -> None:
        import prometheus_client

        self._client = prometheus_client
        self.registries: dict[str, object] = {}
        self.histograms: dict[str, object] = {}
        self.down: set[str] = set()
        for name in names:
            self.restart(name)

    def restart(self, name: str) -> None:
        registry = self._client.CollectorRegistry()
        self.registries[name] = registry
        self.histograms[name] = self._client.Histogram(
            "paynow_worker_processing_seconds", "", registry=registry, buckets=(0.05, 0.1, 0.25, 1.0, 5.0))

    def scrape(self, url: str, timeout: float = 1.0) -> status.Samples | None:
        if url in self.down:
            return None
        return status.parse(self._client.generate_latest(self.registries[url]).decode())


def test_increase_adds_up_observations_across_restarts_like_an_independent_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    for seed in range(30):
        rng = random.Random(seed)
        names = ["us-central1", "europe-west1"]
        processes = _Processes(names)
        monkeypatch.setattr(status, "scrape", processes.scrape)
        seen: list[float] = []
        increase = status.Increase({n: n for n in names}, interval=3600)  # polled by hand below
        increase.poll()
        restarts = 0
        for _ in range(rng.randint(5, 40)):
            name = rng.choice(names)
            for _ in range(rng.randint(0, 30)):
                value = rng.expovariate(10)
                processes.histograms[name].observe(value)  # type: ignore[attr-defined]
                seen.append(value)
            if rng.random() < 0.1:
                processes.down.add(name)  # a scrape that fails is neither a restart nor a loss
                increase.poll()
                processes.down.discard(name)
            increase.poll()  # a scrape just before each restart: nothing is missed
            if rng.random() < 0.3:
                processes.restart(name)
                restarts += 1
        increase.poll()
        count = increase.total("paynow_worker_processing_seconds_count")
        assert count == len(seen), seed
        under = status.buckets(increase.samples, status.WORKER)
        for bound in (0.05, 0.1, 0.25, 1.0, 5.0):
            assert under[bound] == sum(v <= bound for v in seen), (seed, bound)
        assert sum(increase.restarts.values()) == restarts, seed


def test_increase_takes_its_last_scrape_when_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    processes = _Processes(["a"])
    monkeypatch.setattr(status, "scrape", processes.scrape)
    with status.Increase({"a": "a"}, interval=3600) as increase:
        processes.histograms["a"].observe(0.2)  # type: ignore[attr-defined]
        processes.histograms["a"].observe(0.3)  # type: ignore[attr-defined]
    assert increase.total("paynow_worker_processing_seconds_count") == 2
    assert increase.p95_ms(status.WORKER) == pytest.approx(250 + (1000 - 250) * (0.9 / 1.0))
    increase.stop()  # idempotent
    assert increase.total("paynow_worker_processing_seconds_count") == 2


def test_before_and_after_alone_miscount_a_restart() -> None:
    """Why the drills sample all along: one scrape before and one after cannot see what a restart threw away."""
    processes = _Processes(["a"])
    for _ in range(10):
        processes.histograms["a"].observe(0.01)  # type: ignore[attr-defined]
    before = processes.scrape("a")
    for _ in range(5):
        processes.histograms["a"].observe(0.01)  # type: ignore[attr-defined]
    processes.restart("a")
    for _ in range(12):
        processes.histograms["a"].observe(0.01)  # type: ignore[attr-defined]
    after = processes.scrape("a")
    assert before is not None and after is not None
    assert status.total(status.delta(after, before), "paynow_worker_processing_seconds_count") == 2  # not 17


def test_scrapes_share_one_pooled_connection() -> None:
    """`httpx.get` made a client (and an SSL context, ~45 ms CPU) per scrape: the status view's ten calls a second
    took half a core. The scrapes now go through one pooled client: one connection for many scrapes."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    peers: set[int] = set()

    class Metrics(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            peers.add(self.client_address[1])
            body = TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        for _ in range(5):
            samples = status.scrape(url)
            assert samples is not None and status.total(samples, status.RESPONSES) == 100
    finally:
        server.shutdown()
        server.server_close()
        loopback.client().close()  # its pooled connection led to this server
        loopback.client.cache_clear()
    assert len(peers) == 1


def test_the_pooled_client_is_closed_when_the_process_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its kept-alive connections would otherwise be left open at exit (a ResourceWarning after pytest's summary)."""
    at_exit: list[Callable[[], object]] = []
    monkeypatch.setattr(loopback.atexit, "register", at_exit.append)
    loopback.client.cache_clear()
    try:
        pooled = loopback.client()
        assert loopback.client() is pooled and not pooled.is_closed
        assert len(at_exit) == 1
        at_exit[0]()
        assert pooled.is_closed
    finally:
        loopback.client.cache_clear()
