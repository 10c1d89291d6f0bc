"""Beam metrics and Prometheus series by worker region, and JSON log lines in Cloud Logging's shape."""
from __future__ import annotations

import json
import logging
import sys
import threading
from typing import IO, Any

import prometheus_client
from apache_beam.metrics.metric import Metrics
from pythonjsonlogger.json import JsonFormatter

from schemas.verdicts import VERDICTS

NAMESPACE = "paynow"
LOG = logging.getLogger("pipeline")

_REGISTRY = prometheus_client.CollectorRegistry()
prometheus_client.ProcessCollector(registry=_REGISTRY)  # process_start_time_seconds tells a restart; memory, CPU
_PROCESSING = prometheus_client.Histogram(
    "paynow_worker_processing_seconds", "Pub/Sub publish to Firestore commit, per event", ["region"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=_REGISTRY)
_EVENTS = prometheus_client.Counter(
    "paynow_pipeline_events", "Events by final outcome (applied|duplicate|recorded|ignored|dlq)", ["region", "outcome"],
    registry=_REGISTRY)
_DLQ = prometheus_client.Counter("paynow_dlq", "Dead letters by verdict", ["region", "verdict"], registry=_REGISTRY)
_SCHEMAS = prometheus_client.Counter(
    "paynow_schema_versions", "Envelopes seen by writer version and compatibility", ["region", "version", "compatible"],
    registry=_REGISTRY)

_RPCS = prometheus_client.Counter(
    "paynow_firestore_rpcs", "Firestore RPC attempts by result (success|error)", ["region", "result"],
    registry=_REGISTRY)
_THROTTLED = prometheus_client.Counter(
    "paynow_firestore_throttled_seconds", "Seconds Firestore calls waited in the adaptive throttler", ["region"],
    registry=_REGISTRY)
_RELEASED = prometheus_client.Counter(
    "paynow_pipeline_released", "Messages handed back to Pub/Sub for redelivery (transient fault or copy in flight)",
    ["region", "reason"], registry=_REGISTRY)
_UNRESOLVED = prometheus_client.Gauge(
    "paynow_unresolved_dead_letters", "Dead letters not resolved (open or replayed), by verdict, at the last scan",
    ["region", "verdict"], registry=_REGISTRY)
_UNRESOLVED_AGE = prometheus_client.Summary(
    "paynow_unresolved_dead_letter_age_seconds",
    "Age of the oldest unresolved dead letter of a verdict, observed at each scan that found one (the alerts read "
    "sum/count: the mean reported age, as the Cloud Monitoring log metric gives it)", ["region", "verdict"],
    registry=_REGISTRY)

_server_lock = threading.Lock()
_server_port: int | None = None


def serve_metrics(port: int) -> None:
    """Serve Prometheus text on 127.0.0.1:port, once per process however many DoFns ask."""
    global _server_port
    if port <= 0:
        return
    with _server_lock:
        if _server_port is None:
            prometheus_client.start_http_server(port, addr="127.0.0.1", registry=_REGISTRY)
            _server_port = port
            log(logging.INFO, "metrics endpoint up", port=port)


class RegionMetrics:
    """One worker region's counters: Beam metrics (named `<metric>_<region>`) and the Prometheus series."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._beam: dict[str, Any] = {}

    def _counter(self, name: str) -> Any:
        key = f"{name}_{self.region}"
        if key not in self._beam:
            self._beam[key] = Metrics.counter(NAMESPACE, key)
        return self._beam[key]

    def outcome(self, outcome: str, count: int = 1) -> None:
        """One message reached its end: applied, recorded, duplicate or dlq (each also counts as processed)."""
        self._counter("processed").inc(count)
        self._counter(outcome).inc(count)
        _EVENTS.labels(self.region, outcome).inc(count)

    def dead_letter(self, verdict: str) -> None:
        self.outcome("dlq")
        self._counter(f"dlq_{verdict}").inc()
        _DLQ.labels(self.region, verdict).inc()

    def unresolved_dead_letters(self, stats: dict[str, tuple[int, float]]) -> None:
        """One scan of `deadLetters`: verdict -> (unresolved count, age in s of the oldest); absent verdicts are 0."""
        for verdict in {*stats, *VERDICTS}:
            count, age = stats.get(verdict, (0, 0.0))
            _UNRESOLVED.labels(self.region, verdict).set(count)
            if count:
                _UNRESOLVED_AGE.labels(self.region, verdict).observe(age)

    def schema_version(self, version: int | str, compatible: bool) -> None:
        self._counter(f"schema_v{version}_{'compatible' if compatible else 'incompatible'}").inc()
        _SCHEMAS.labels(self.region, str(version), str(compatible).lower()).inc()

    def rpc(self, success: bool) -> None:
        """One Firestore RPC attempt (Beam's Datastore sink counts the same pair)."""
        self._counter("firestoreRpcSuccesses" if success else "firestoreRpcErrors").inc()
        _RPCS.labels(self.region, "success" if success else "error").inc()

    def throttled(self, seconds: float) -> None:
        """Time a Firestore call waited in the adaptive throttler: a brown-out shows here, not as backlog."""
        self._counter("cumulativeThrottlingSeconds").inc(round(seconds))
        _THROTTLED.labels(self.region).inc(seconds)

    def released(self, reason: str, count: int = 1) -> None:
        """Messages released for redelivery (never acked, never dead-lettered)."""
        self._counter(f"released_{reason}").inc(count)
        _RELEASED.labels(self.region, reason).inc(count)

    def latency(self, seconds: float) -> None:
        key = f"publish_to_commit_ms_{self.region}"
        if key not in self._beam:
            self._beam[key] = Metrics.distribution(NAMESPACE, key)
        self._beam[key].update(max(0, int(seconds * 1000)))
        _PROCESSING.labels(self.region).observe(max(0.0, seconds))


class _Line(dict[str, Any]):
    """One `log()` line's fields. The JSON formatter merges a dict message into its object; a handler without it
    (Dataflow's worker handler writes the message text) prints this JSON instead of a Python repr."""

    def __str__(self) -> str:
        return json.dumps(self, default=str)


def configure_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Route every log record of this process as one JSON object a line (severity, message, its fields, logger,
    exception) to stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(["levelname", "message", "name"], json_default=str,
                                       rename_fields={"levelname": "severity", "name": "logger",
                                                      "exc_info": "exception"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(max(level, logging.WARNING))


def log(level: int, message: str, **fields: Any) -> None:
    """Log one line with its fields (cheap when the level is disabled)."""
    if LOG.isEnabledFor(level):
        LOG.log(level, _Line(severity=logging.getLevelName(level), message=message, **fields))
