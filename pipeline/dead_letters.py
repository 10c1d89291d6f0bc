"""PublishDeadLetters: encode each rejected message as a DeadLetterRecord and publish it to the DLQ topic."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import apache_beam as beam
import google.cloud.pubsub_v1 as pubsub_v1
from apache_beam.pvalue import PCollection

from pipeline.batching import BatchInBundle
from pipeline.firestore_transport import backoff
from pipeline.local.dedupe import claims_for
from pipeline.local.leases import leases_for
from pipeline.model import Message, Rejected
from pipeline.observability import RegionMetrics, log
from schemas import encode_dlq_record

PUBLISH_TIMEOUT = 30.0
PUBLISH_ATTEMPTS = 5


def dead_letter(rejected: Rejected, worker_region: str, failed_at_ms: int) -> tuple[bytes, dict[str, str]]:
    """The DLQ message (Avro DeadLetterRecord bytes) and its Pub/Sub attributes for one rejected message."""
    record = {
        "originalData": rejected.message.data, "originalAttributes": dict(rejected.message.attributes),
        "verdict": rejected.verdict, "reason": rejected.reason, "failedAt": failed_at_ms, "step": rejected.step,
        "sourceRegion": rejected.source_region, "workerRegion": worker_region, "eventId": rejected.event_id,
    }
    attributes = {"verdict": rejected.verdict, "step": rejected.step, "sourceRegion": rejected.source_region,
                  "workerRegion": worker_region}
    if rejected.event_id:
        attributes["eventId"] = rejected.event_id
    return encode_dlq_record(record), attributes


class DeadLetterUnpublished(RuntimeError):
    """DLQ publishes still failing after the attempts (native read: the runner retries the bundle)."""


class _PublishFn(beam.DoFn):
    def __init__(self, topic: str, region: str, acking_subscription: str | None) -> None:
        self._topic = topic
        self._region = region
        self._acking_subscription = acking_subscription

    def setup(self) -> None:
        self._publisher = pubsub_v1.PublisherClient()
        self._metrics = RegionMetrics(self._region)

    def _publish_all(self, batch: list[Rejected]) -> list[Rejected]:
        """Publish the batch; return what still failed after the last attempt."""
        pending = batch
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            now_ms = int(time.time() * 1000)
            futures = [(r, self._publisher.publish(self._topic, data, **attrs))
                       for r in pending for data, attrs in [dead_letter(r, self._region, now_ms)]]
            failed = []
            for rejected, future in futures:
                try:
                    future.result(timeout=PUBLISH_TIMEOUT)
                except Exception as exc:  # retried below; never raised out of the DoFn
                    failed.append(rejected)
                    error = repr(exc)[:300]
            if not failed:
                return []
            log(logging.WARNING, "DLQ publish failed", attempt=attempt, failed=len(failed), error=error)
            pending = failed
            time.sleep(backoff(attempt))
        return pending

    def process(self, batch: list[Rejected]) -> Iterator[Message]:
        failed = self._publish_all(batch)
        if failed and self._acking_subscription:
            # Not acknowledged and not settled: its claim is forgotten so the redelivered copy is processed
            # again (not acked as a "duplicate" of this attempt), and the lease handed back (DESIGN §3).
            self._metrics.released("DeadLetterUnpublished", len(failed))
            claims_for(self._acking_subscription).forget(r.message.claim for r in failed if r.message.claim)
            leases_for(self._acking_subscription).hand_back([r.message.ack_id for r in failed if r.message.ack_id])
        elif failed:
            # The native read has already checkpointed the message: fail the bundle so the runner retries it.
            raise DeadLetterUnpublished(f"{len(failed)} dead letters not published to {self._topic}")
        for rejected in batch:
            if rejected in failed:
                log(logging.ERROR, "dead letter left for redelivery", eventId=rejected.event_id,
                    verdict=rejected.verdict)
                continue
            self._metrics.dead_letter(rejected.verdict)
            log(logging.DEBUG, "dead-lettered", eventId=rejected.event_id, verdict=rejected.verdict,
                step=rejected.step, reason=rejected.reason, region=self._region)
            yield rejected.message

    def teardown(self) -> None:
        self._publisher.stop()


class PublishDeadLetters(beam.PTransform[dict[str, PCollection[Rejected]], dict[str, PCollection[Message]]]):
    """{source: Rejected} -> published to the DLQ topic -> {source: Message to acknowledge}."""

    def __init__(self, topic: str, region: str, acking_subscription: str | None = None) -> None:
        super().__init__()
        self._topic = topic
        self._region = region
        self._acking_subscription = acking_subscription

    def expand(self, sources: dict[str, PCollection[Rejected]]) -> dict[str, PCollection[Message]]:
        return {name: (rejected
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(500))
                       | f"Publish{name}" >> beam.ParDo(
                           _PublishFn(self._topic, self._region, self._acking_subscription)))
                for name, rejected in sources.items()}
