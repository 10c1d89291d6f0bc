"""Pipeline benchmark (no-op sink vs Firestore sink, latency at 100 events/s) and the process harness it uses."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from google.cloud import firestore, pubsub_v1

from ops.topology import Topology
from schemas import encode_envelope, envelope_attributes, envelope_from_payload, ordering_key

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- pipeline:begin -->", "<!-- pipeline:end -->"
NOOP_FLAG = "--noop-sink"


class PipelineProcess:
    """`python -m pipeline ...` in its own process group, its JSON log in a file."""

    def __init__(self, topology: Topology, *extra: str, log_dir: Path, env: dict[str, str] | None = None,
                 noop_sink: bool = False) -> None:
        self.topology = topology
        self.log_path = log_dir / f"pipeline-{uuid.uuid4().hex[:8]}.log"
        command = [sys.executable, "-m", "ops.bench_pipeline", NOOP_FLAG] if noop_sink else [
            sys.executable, "-m", "pipeline"]
        self.command = [*command, "--subscription", topology.subscription, "--dlq_topic", topology.dlq_topic,
                        "--project", topology.project, "--region", "us-central1", *extra]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60) -> PipelineProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while '"pipeline ready"' not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pipeline did not become ready:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def kill9(self) -> None:
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def __enter__(self) -> PipelineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publisher() -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient(publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))


def publish_payloads(client: pubsub_v1.PublisherClient, topic: str, payloads: Iterable[dict[str, Any]],
                     region: str = "us-central1") -> None:
    """Publish PayNow payloads as v3 envelopes the way the ingress does (ordering key, attributes); wait for all."""
    futures = []
    for payload in payloads:
        envelope = envelope_from_payload(json.dumps(payload).encode(), timestamp_ms=int(time.time() * 1000),
                                         region=region)
        futures.append(client.publish(topic, encode_envelope(envelope), ordering_key=ordering_key(envelope),
                                      **envelope_attributes(envelope)))
    for future in futures:
        future.result(timeout=60)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def order_payload(event_id: str, uid: str, product_id: str = "459935272365195264") -> dict[str, Any]:
    return {"id": event_id, "event_type": "ON_ORDER_COMPLETED", "data": {"order": {
        "id": f"order-{event_id}", "pretty_id": event_id,
        "customer": {"id": f"cust-{uid}", "email": None, "metadata": {"uid": uid}},
        "lines": [{"product_id": product_id, "quantity": 1, "price": "1.00"}]}}}


def processed_count(db: firestore.Client) -> int:
    return int(db.collection("webhookEvents").count().get()[0][0].value)


def _run_noop(argv: list[str]) -> int:
    """The pipeline with ApplyToLedger replaced by a sink that writes nothing (benchmark baseline)."""
    import apache_beam as beam

    from pipeline.main import run

    class NoopCommit(beam.DoFn):
        def process(self, event: Any) -> Iterator[Any]:
            yield event.message

    class NoopLedger(beam.PTransform):
        def __init__(self, config: Any) -> None:
            super().__init__()

        def expand(self, events: Any) -> Any:
            return events | "Commit" >> beam.ParDo(NoopCommit()).with_outputs("dlq", main="committed")

    return run(argv, sink=NoopLedger)
