"""PublishDeadLetters: record each rejected message durably (`deadLetters/{id}` in Firestore), publish it as a
DeadLetterRecord to the DLQ topic, and only then let it be acknowledged (DESIGN §3)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import google.cloud.pubsub_v1 as pubsub_v1
from apache_beam.pvalue import PCollection
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from pipeline.batching import BatchInBundle
from pipeline.commit_plan import Upsert, Write
from pipeline.firestore_transport import RPC_TIMEOUT, FirestoreConfig, FirestoreTransport, backoff
from pipeline.model import Message, Rejected
from pipeline.observability import RegionMetrics, log
from schemas import DecodeError, decode_envelope, encode_dlq_record, ordering_key
from schemas import attributes as attr
from schemas import dead_letters as dl
from schemas.verdicts import VERDICTS

PUBLISH_TIMEOUT = 30.0
PUBLISH_ATTEMPTS = 5
RECORDS_PER_COMMIT = 100
RECORD_BYTES_PER_COMMIT = 8_000_000  # Firestore refuses a request over 10 MiB
SCAN_SECONDS = 60.0

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


def _envelope_ids(data: bytes) -> tuple[dict[str, str | None], str]:
    """uid, customerId and orderId of a message whose envelope decodes (any version), and its ordering key."""
    try:
        envelope = decode_envelope(data, min_compatible=0)
    except (DecodeError, KeyError, TypeError, ValueError):
        return {dl.UID: None, dl.CUSTOMER_ID: None, dl.ORDER_ID: None}, ""
    customer = envelope["data"].get("customer") or {}
    return ({dl.UID: customer.get("uid"), dl.CUSTOMER_ID: customer.get("id"),
             dl.ORDER_ID: envelope["data"].get("orderId")}, ordering_key(envelope))


def letter_write(rejected: Rejected, worker_region: str, failed_at_ms: int) -> Upsert:
    """The upsert recording one dead letter: the same event dead-lettered again updates its record (state open,
    latest failure; `firstFailedAt` kept as the minimum, `failures` counted), never a second one."""
    message = rejected.message
    ids, derived_key = _envelope_ids(message.data)
    fields = dl.record_fields(
        event_id=rejected.event_id, verdict=rejected.verdict, reason=rejected.reason, step=rejected.step,
        failed_at_ms=failed_at_ms, source_region=rejected.source_region, worker_region=worker_region,
        data=message.data, attributes=message.attributes,
        ordering_key=message.ordering_key or message.attributes.get(attr.ORDERING_KEY) or derived_key,
        uid=rejected.uid or ids[dl.UID], customer_id=ids[dl.CUSTOMER_ID], order_id=ids[dl.ORDER_ID])
    return Upsert(dl.letter_path(rejected.event_id, message.data), fields, increments={dl.FAILURES: 1},
                  minimums={dl.FIRST_FAILED_AT: failed_at_ms})


def _chunks(writes: list[tuple[Rejected, Upsert]]) -> Iterator[list[tuple[Rejected, Upsert]]]:
    chunk: list[tuple[Rejected, Upsert]] = []
    size = 0
    for item in writes:
        cost = len(item[0].message.data) + 2048
        if chunk and (len(chunk) >= RECORDS_PER_COMMIT or size + cost > RECORD_BYTES_PER_COMMIT):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk


def record_dead_letters(commit: Callable[[list[Write]], None], batch: list[Rejected], worker_region: str,
                        failed_at_ms: int) -> list[Rejected]:
    """Record each dead letter in `deadLetters` (atomic commits of up to RECORDS_PER_COMMIT); return those whose
    commit failed (any error: transient for the caller, which must not acknowledge them)."""
    failed: list[Rejected] = []
    for chunk in _chunks([(r, letter_write(r, worker_region, failed_at_ms)) for r in batch]):
        try:
            commit([w for _, w in chunk])
        except Exception as exc:  # Unavailable, WriteFailed or anything else: never acked, redelivered
            log(logging.WARNING, "dead-letter record not written", letters=len(chunk), error=repr(exc)[:300])
            failed.extend(r for r, _ in chunk)
    return failed


def scan_unresolved(client: firestore.Client, now_ms: int) -> dict[str, tuple[int, float]]:
    """Per verdict, how many dead letters are unresolved and the age of the oldest: two small reads a verdict
    (the oldest one, and an aggregation count), whatever the number of letters."""
    stats: dict[str, tuple[int, float]] = {}
    collection = client.collection(dl.COLLECTION)
    for verdict in VERDICTS:
        query = (collection.where(filter=FieldFilter(dl.VERDICT, "==", verdict))
                 .where(filter=FieldFilter(dl.STATE, "in", list(dl.UNRESOLVED))))
        oldest = list(query.order_by(dl.FIRST_FAILED_AT).limit(1).stream(timeout=RPC_TIMEOUT))
        if not oldest:
            continue
        counting: Any = query  # the client types count() as returning a class, not an AggregationQuery
        [[count]] = counting.count().get(timeout=RPC_TIMEOUT)
        first_ms = int((oldest[0].to_dict() or {}).get(dl.FIRST_FAILED_AT) or now_ms)
        stats[verdict] = (int(count.value), max(0.0, (now_ms - first_ms) / 1000))
    return stats


_scanner_lock = threading.Lock()
_scanner: threading.Thread | None = None


def start_scanner(config: FirestoreConfig, interval: float = SCAN_SECONDS) -> None:
    """Once per worker process: every `interval`, export the unresolved dead letters (count and oldest age by
    verdict) as Prometheus series and one log line per verdict (the log-based metric of deploy/monitoring.tf)."""
    global _scanner
    with _scanner_lock:
        if _scanner is not None:
            return
        metrics = RegionMetrics(config.region)

        def loop() -> None:
            client = config.client()
            while True:
                try:
                    stats = scan_unresolved(client, int(time.time() * 1000))
                except Exception as exc:  # a failed scan is retried at the next interval; the alert goes stale
                    log(logging.WARNING, "dead-letter scan failed", error=repr(exc)[:300])
                else:
                    metrics.unresolved_dead_letters(stats)
                    for verdict, (count, age) in stats.items():
                        log(logging.INFO, "unresolved dead letters", verdict=verdict, count=count,
                            oldestAgeSeconds=round(age), region=config.region)
                time.sleep(interval)

        _scanner = threading.Thread(target=loop, name="dead-letter-scan", daemon=True)
        _scanner.start()


class DeadLetterUnpublished(RuntimeError):
    """Dead letters not recorded or not published after the attempts (native read: the runner retries the bundle)."""


class _PublishFn(beam.DoFn):
    def __init__(self, topic: str, config: FirestoreConfig, on_unpublished: Unpublished | None,
                 scan: bool = True) -> None:
        self._topic = topic
        self._config = config
        self._region = config.region
        self._on_unpublished = on_unpublished
        self._scan = scan

    def setup(self) -> None:
        self._publisher = pubsub_v1.PublisherClient()
        self._metrics = RegionMetrics(self._region)
        self._client = self._config.client()
        self._commit: Callable[[list[Write]], None] = FirestoreTransport(self._client, self._config).commit
        if self._scan:
            start_scanner(self._config)

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
        # The record first: a message whose record failed is not published either (no Pub/Sub copy without one).
        unrecorded = record_dead_letters(self._commit, batch, self._region, int(time.time() * 1000))
        recorded = [r for r in batch if not any(r is u for u in unrecorded)]
        unpublished = self._publish_all(recorded) if recorded else []
        failed = {id(r) for r in [*unrecorded, *unpublished]}
        if failed and self._on_unpublished is not None:
            # Neither acknowledged nor dead-lettered: handed back for redelivery (DESIGN §3).
            if unrecorded:
                self._metrics.released("DeadLetterUnrecorded", len(unrecorded))
            if unpublished:
                self._metrics.released("DeadLetterUnpublished", len(unpublished))
            self._on_unpublished([r.message for r in batch if id(r) in failed])
        elif failed:
            # The native read has already checkpointed the message: fail the bundle so the runner retries it.
            raise DeadLetterUnpublished(f"{len(unrecorded)} dead letters not recorded in {dl.COLLECTION}, "
                                        f"{len(unpublished)} not published to {self._topic}")
        for rejected in batch:
            if id(rejected) in failed:
                log(logging.ERROR, "dead letter left for redelivery", eventId=rejected.event_id,
                    verdict=rejected.verdict)
                continue
            self._metrics.dead_letter(rejected.verdict)
            log(logging.DEBUG, "dead-lettered", eventId=rejected.event_id, verdict=rejected.verdict,
                step=rejected.step, reason=rejected.reason, region=self._region)
            yield rejected.message

    def teardown(self) -> None:
        self._publisher.stop()
        self._client.close()


class PublishDeadLetters(beam.PTransform[dict[str, PCollection[Rejected]], dict[str, PCollection[Message]]]):
    """{source: Rejected} -> recorded in `deadLetters` and published to the DLQ topic -> {source: Message to
    acknowledge}."""

    def __init__(self, topic: str, config: FirestoreConfig, on_unpublished: Unpublished | None = None) -> None:
        super().__init__()
        self._topic = topic
        self._config = config
        self._on_unpublished = on_unpublished

    def expand(self, sources: dict[str, PCollection[Rejected]]) -> dict[str, PCollection[Message]]:
        return {name: (rejected
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(500))
                       | f"Publish{name}" >> beam.ParDo(
                           _PublishFn(self._topic, self._config, self._on_unpublished)))
                for name, rejected in sources.items()}
