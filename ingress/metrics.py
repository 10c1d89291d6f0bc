"""Prometheus metrics of one ingress app, in a registry of its own so several apps never collide."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngressMetrics:
    """The names in the team contract, all labelled with the region."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_start_time_seconds tells a restart; memory, CPU
        self.ack_seconds = Histogram(
            "paynow_webhook_ack_seconds", "Time from request start to webhook answer, by outcome.",
            ["region", "outcome"], buckets=ACK_BUCKETS, registry=self.registry)
        self.responses = Counter(
            "paynow_webhook_responses_total", "Webhook answers by HTTP status and reason (error code).",
            ["region", "status", "reason"], registry=self.registry)
        self.publish_failures = Counter(
            "paynow_publish_failures_total", "Messages whose Publish RPC failed or timed out.",
            ["region"], registry=self.registry)
        self.paused_keys = Gauge(
            "paynow_paused_ordering_keys", "Ordering keys failed and not yet released by the publisher.",
            ["region"], registry=self.registry)
        self.draining = Gauge("paynow_draining", "1 while this instance drains.", ["region"], registry=self.registry)
        self.draining.labels(region).set(0)
        self.paused_keys.labels(region).set(0)
        self.publish_failures.labels(region)
        self._children: dict[tuple[int, str, str], tuple[Any, Any]] = {}

    def observe(self, status: int, reason: str, outcome: str, seconds: float) -> None:
        children = self._children.get((status, reason, outcome))
        if children is None:  # labels() validates and locks on every call; a request needs neither twice
            children = (self.ack_seconds.labels(self.region, outcome),
                        self.responses.labels(self.region, str(status), reason))
            self._children[(status, reason, outcome)] = children
        children[0].observe(seconds)
        children[1].inc()

    def publish_failed(self, messages: int) -> None:
        self.publish_failures.labels(self.region).inc(messages)

    def watch_paused_keys(self, read: Callable[[], float]) -> None:
        self.paused_keys.labels(self.region).set_function(read)

    def set_draining(self, draining: bool) -> None:
        self.draining.labels(self.region).set(1 if draining else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
