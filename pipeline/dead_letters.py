"""PublishDeadLetters: encode each rejected message as a DeadLetterRecord and publish it to the DLQ topic."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import apache_beam as beam
import google.cloud.pubsub_v1 as pubsub_v1
from apache_beam.pvalue import PCollection

from pipeline.batching import BatchInBundle
from pipeline.firestore_transport import backoff
from pipeline.model import Message, Rejected
from pipeline.observability import RegionMetrics, log
from schemas import attributes as attr
from schemas import encode_dlq_record

PUBLISH_TIMEOUT = 30.0
PUBLISH_ATTEMPTS = 5

Unpublished = Callable[[list[Message]], None]
"""What a read that acknowledges by itself later does with messages whose dead letter was not published (the
local acking read hands them back for redelivery); without one, the bundle fails and the runner retries it."""


def dead_letter(rejected: Rejected, worker_region: str, failed_at_ms: int) -> tuple[bytes, dict[str, str]]:
    """The DLQ message (Avro DeadLetterRecord bytes) and its Pub/Sub attributes for one rejected message."""
    record = {
        "originalData": rejected.message.data, "originalAttributes": dict(rejected.message.attributes),
        "verdict": rejected.verdict, "reason": rejected.reason, "failedAt": failed_at_ms, "step": rejected.step,
        "sourceRegion": rejected.source_region, "workerRegion": worker_region, "eventId": rejected.event_id,
    }
    attributes = {attr.VERDICT: rejected.verdict, attr.STEP: rejected.step, attr.SOURCE_REGION: rejected.source_region,
                  attr.WORKER_REGION: worker_region}
    if rejected.event_id:
        attributes[attr.EVENT_ID] = rejected.event_id
    return encode_dlq_record(record), attributes


class DeadLetterUnpublished(RuntimeError):
    """DLQ publishes still failing after the attempts (native read: the runner retries the bundle)."""


class _PublishFn(beam.DoFn):
    def __init__(self, topic: str, region: str, on_unpublished: Unpublished | None) -> None:
        self._topic = topic
        self._region = region
        self._on_unpublished = on_unpublished

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
        if failed and self._on_unpublished is not None:
            # Neither acknowledged nor dead-lettered: handed back for redelivery (DESIGN §3).
            self._metrics.released("DeadLetterUnpublished", len(failed))
            self._on_unpublished([r.message for r in failed])
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

    def __init__(self, topic: str, region: str, on_unpublished: Unpublished | None = None) -> None:
        super().__init__()
        self._topic = topic
        self._region = region
        self._on_unpublished = on_unpublished

    def expand(self, sources: dict[str, PCollection[Rejected]]) -> dict[str, PCollection[Message]]:
        return {name: (rejected
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(500))
                       | f"Publish{name}" >> beam.ParDo(
                           _PublishFn(self._topic, self._region, self._on_unpublished)))
                for name, rejected in sources.items()}
