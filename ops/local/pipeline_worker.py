"""A local pipeline worker (`python -m pipeline`) as a harness process, and publishing deliveries onto its topic."""
from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1

from ops.local.process import NotReady, Process, wait_for
from ops.local.topology import Topology
from schemas import deliveries, encode_envelope, envelope_attributes, envelope_from_payload, ordering_key

ROOT = Path(__file__).resolve().parents[2]


class PipelineProcess:
    """`python -m pipeline ...` (or the no-op-sink child) as a harness process, its JSON log in a file of its own."""

    def __init__(self, topology: Topology, *extra: str, log_dir: Path, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        self.log_path = log_dir / f"pipeline-{uuid.uuid4().hex[:8]}.log"
        command = command or [sys.executable, "-m", "pipeline"]
        argv = [*command, "--subscription", topology.subscription, "--dlq_topic", topology.dlq_topic,
                "--project", topology.project, "--region", "us-central1", *extra]
        self.process = Process("pipeline", argv, dict(env or {}), str(self.log_path), cwd=str(ROOT), marker=False)

    def start(self, ready_timeout: float = 60) -> PipelineProcess:
        self.process.start()
        try:
            self.process.wait_ready(lambda: '"pipeline ready"' in self.log(), "pipeline", ready_timeout, 0.1)
        except NotReady:
            self.stop()
            raise RuntimeError(f"pipeline did not become ready:\n{self.log()[-3000:]}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> PipelineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publisher() -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient(publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))


def publish_payload(client: pubsub_v1.PublisherClient, topic: str, payload: dict[str, Any],
                    region: str = "us-central1") -> Any:
    """Publish a PayNow delivery as a v4 envelope the way the ingress does (ordering key, attributes)."""
    envelope = envelope_from_payload(deliveries.encode(payload), timestamp_ms=int(time.time() * 1000),
                                     region=region)
    return client.publish(topic, encode_envelope(envelope), ordering_key=ordering_key(envelope),
                          **envelope_attributes(envelope))


def publish_payloads(client: pubsub_v1.PublisherClient, topic: str, payloads: Iterable[dict[str, Any]],
                     region: str = "us-central1") -> None:
    """Publish them all and wait until every publish is confirmed."""
    for future in [publish_payload(client, topic, payload, region) for payload in payloads]:
        future.result(timeout=60)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Whether `condition` came to hold within `timeout` (wait_for's poll, as a truth value for assertions)."""
    try:
        wait_for(condition, "condition", timeout, interval=interval)
    except NotReady:
        return False
    return True
