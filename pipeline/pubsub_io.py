"""Pub/Sub read steps (native, or acking: pull without ack, extend leases, ack after the last step) and the ack."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from google.cloud import pubsub_v1

from pipeline.batching import BatchInBundle
from pipeline.dedupe import claims_for
from pipeline.model import Message
from pipeline.observability import RegionMetrics, log

DEFAULT_ACK_DEADLINE = 60
MAX_PULL = 1000
PULL_BUDGET_SECONDS = 0.2
MAX_IN_FLIGHT = 5000
ACK_CHUNK = 2500
PULL_INTERVAL = 0.05
RELEASE_DELAY = 5  # seconds until a released message is redelivered: a pause, not a spin, while a fault lasts


def _millis(value: Any) -> int:
    """Epoch ms from a datetime, a protobuf Timestamp or a Beam Timestamp (publish times come in all three)."""
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, Timestamp):
        return int(value.micros // 1000)
    if hasattr(value, "seconds"):
        return int(value.seconds) * 1000 + int(getattr(value, "nanos", 0)) // 1_000_000
    return int(value)


class Leases:
    """Ack ids in flight in this process; one daemon thread keeps extending their ack deadline until released."""

    def __init__(self, subscription: str) -> None:
        self.subscription = subscription
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._client: pubsub_v1.SubscriberClient | None = None
        self._thread: threading.Thread | None = None
        self._deadline = DEFAULT_ACK_DEADLINE

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ack_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.update(ack_ids)
            if self._thread is None:
                self._client = pubsub_v1.SubscriberClient()
                self._deadline = self._subscription_deadline(self._client)
                self._thread = threading.Thread(target=self._extend_forever, name="lease-extender", daemon=True)
                self._thread.start()

    def release(self, ack_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.difference_update(ack_ids)

    def hand_back(self, ack_ids: list[str], delay: int = RELEASE_DELAY) -> None:
        """Stop extending these leases and ask for redelivery in `delay` seconds (a nack when 0)."""
        self.release(ack_ids)
        client = self._client or pubsub_v1.SubscriberClient()
        for start in range(0, len(ack_ids), ACK_CHUNK):
            try:
                client.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ack_ids[start:start + ACK_CHUNK],
                    "ack_deadline_seconds": delay}, timeout=10)
            except Exception as exc:  # not extended any more: redelivered when the current deadline lapses
                log(logging.WARNING, "handing leases back failed", error=repr(exc)[:300])

    def return_all(self) -> int:
        """Give every in-flight message back for immediate redelivery (ack deadline 0); returns how many."""
        with self._lock:
            ids, self._ids = list(self._ids), set()
        client = self._client or pubsub_v1.SubscriberClient()
        for start in range(0, len(ids), ACK_CHUNK):
            try:
                client.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ids[start:start + ACK_CHUNK],
                    "ack_deadline_seconds": 0}, timeout=10)
            except Exception as exc:  # they are redelivered when their deadline lapses instead
                log(logging.WARNING, "returning leases failed", error=repr(exc)[:300])
        return len(ids)

    def _subscription_deadline(self, client: pubsub_v1.SubscriberClient) -> int:
        """Extend by the subscription's own ack deadline, so a dead worker's leases lapse no later than usual."""
        try:
            sub = client.get_subscription(request={"subscription": self.subscription}, timeout=10)
            return max(10, int(sub.ack_deadline_seconds))
        except Exception as exc:
            log(logging.WARNING, "subscription ack deadline unknown", error=repr(exc)[:300])
            return DEFAULT_ACK_DEADLINE

    def _extend_forever(self) -> None:
        while True:
            time.sleep(self._deadline / 3)
            with self._lock:
                ids = list(self._ids)
            for start in range(0, len(ids), ACK_CHUNK):
                try:
                    assert self._client is not None
                    self._client.modify_ack_deadline(request={
                        "subscription": self.subscription, "ack_ids": ids[start:start + ACK_CHUNK],
                        "ack_deadline_seconds": self._deadline}, timeout=10)
                except Exception as exc:  # expired ids or a blip: the next round or a redelivery covers it
                    log(logging.WARNING, "lease extension failed", error=repr(exc)[:300])


_leases: dict[str, Leases] = {}
_leases_lock = threading.Lock()
_ready_logged = threading.Event()


def leases_for(subscription: str) -> Leases:
    """The process-wide lease registry of a subscription (shared by the pull and the ack steps)."""
    with _leases_lock:
        if subscription not in _leases:
            _leases[subscription] = Leases(subscription)
        return _leases[subscription]


def log_ready(**fields: Any) -> None:
    """The one INFO `pipeline ready` line per process."""
    if not _ready_logged.is_set():
        _ready_logged.set()
        log(logging.INFO, "pipeline ready", **fields)


class PullFn(beam.DoFn):
    """On each tick: one synchronous pull of up to MAX_PULL messages, not acknowledged, leases registered."""

    def __init__(self, subscription: str, region: str) -> None:
        self._subscription = subscription
        self._region = region

    def setup(self) -> None:
        self._client = pubsub_v1.SubscriberClient()
        self._leases = leases_for(self._subscription)
        self._last_pull = 0.0

    def _pull(self) -> list[Any]:
        """Pull until MAX_PULL messages, an empty answer, or the time budget (a server may cap each pull)."""
        received: list[Any] = []
        started = time.monotonic()
        while len(received) < MAX_PULL and time.monotonic() - started < PULL_BUDGET_SECONDS:
            if len(self._leases) >= MAX_IN_FLIGHT:
                break  # back-pressure: let the sink catch up before leasing more
            try:
                response = self._client.pull(request={
                    "subscription": self._subscription, "max_messages": MAX_PULL - len(received),
                    "return_immediately": True}, timeout=10, retry=None)
            except Exception as exc:  # an unreachable Pub/Sub must not kill the job; the next tick retries
                log(logging.WARNING, "pull failed", error=repr(exc)[:300], region=self._region)
                time.sleep(0.5)
                break
            log_ready(subscription=self._subscription, region=self._region, read="acking")
            batch = list(response.received_messages)
            self._leases.add(r.ack_id for r in batch)
            received.extend(batch)
            if not batch:
                break
        return received

    def process(self, _tick: Any) -> Iterator[Message]:
        if time.monotonic() - self._last_pull < PULL_INTERVAL / 2:
            return  # a tick the runner delivered late, right after another one: the last pull just drained it
        received = self._pull()
        self._last_pull = time.monotonic()
        for r in received:
            m = r.message
            yield Message(bytes(m.data), dict(m.attributes), _millis(m.publish_time), m.message_id, m.ordering_key,
                          r.ack_id)

    def teardown(self) -> None:
        self._client.close()


class AckingRead(beam.PTransform):
    """PeriodicImpulse -> pull without ack: messages stay leased until `Acknowledge` (DESIGN §3)."""

    def __init__(self, subscription: str, region: str, interval: float = PULL_INTERVAL) -> None:
        super().__init__()
        self._subscription = subscription
        self._region = region
        self._interval = interval

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (begin
                | "Tick" >> PeriodicImpulse(start_timestamp=Timestamp.now(), stop_timestamp=MAX_TIMESTAMP,
                                            fire_interval=self._interval)
                | "Pull" >> beam.ParDo(PullFn(self._subscription, self._region)))


def _from_pubsub(message: Any) -> Message:
    return Message(bytes(message.data or b""), dict(message.attributes or {}), _millis(message.publish_time),
                   message.message_id or "", message.ordering_key or "")


class NativeRead(beam.PTransform):
    """Beam's ReadFromPubSub: right on Dataflow, which acknowledges only after its durable checkpoint."""

    def __init__(self, subscription: str) -> None:
        super().__init__()
        self._subscription = subscription

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (begin
                | "Read" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
                | "ToMessage" >> beam.Map(_from_pubsub))


class _AckFn(beam.DoFn):
    def __init__(self, subscription: str) -> None:
        self._subscription = subscription

    def setup(self) -> None:
        self._client = pubsub_v1.SubscriberClient()
        self._leases = leases_for(self._subscription)

    def process(self, batch: list[Message]) -> None:
        # Settled before the ack: each message here is durable (committed, dead-lettered, or found committed),
        # so a copy arriving from now on may be dropped (DESIGN §3). An ack that fails then means a redelivery,
        # which the settled claim acks.
        claims_for(self._subscription).settle(m.claim for m in batch if m.claim)
        ack_ids = [m.ack_id for m in batch if m.ack_id]
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = ack_ids[start:start + ACK_CHUNK]
            for attempt in range(3):
                try:
                    self._client.acknowledge(request={"subscription": self._subscription, "ack_ids": chunk},
                                             timeout=10)
                    break
                except Exception as exc:  # unacked means redelivered; the idempotent commit absorbs it
                    log(logging.WARNING, "acknowledge failed", error=repr(exc)[:300], attempt=attempt + 1)
                    time.sleep(0.2 * 2**attempt)
        self._leases.release(ack_ids)

    def teardown(self) -> None:
        self._client.close()


class Acknowledge(beam.PTransform):
    """Acknowledge messages whose fate is durable (committed, dead-lettered, or dropped as duplicates).

    Takes {source: Message} and acknowledges each source on its own branch (see build_pipeline).
    """

    def __init__(self, subscription: str) -> None:
        super().__init__()
        self._subscription = subscription

    def expand(self, sources: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {name: (messages
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(ACK_CHUNK))
                       | f"Ack{name}" >> beam.ParDo(_AckFn(self._subscription)))
                for name, messages in sources.items()}


class _ReleaseFn(beam.DoFn):
    def __init__(self, subscription: str, region: str, reason: str) -> None:
        self._subscription = subscription
        self._region = region
        self._reason = reason

    def setup(self) -> None:
        self._leases = leases_for(self._subscription)
        self._metrics = RegionMetrics(self._region)

    def process(self, batch: list[Message]) -> None:
        # Forgotten before the hand-back, so the redelivered copy passes the dedupe again.
        claims_for(self._subscription).forget(m.claim for m in batch if m.claim)
        self._leases.hand_back([m.ack_id for m in batch if m.ack_id])
        self._metrics.released(self._reason, len(batch))


class Release(beam.PTransform):
    """Hand messages whose fate is not durable back to Pub/Sub for redelivery: never acked, never dead-lettered.

    Takes {reason: Message}: a copy of an event still in flight, a transient fault that outlasted its retries.
    """

    def __init__(self, subscription: str, region: str) -> None:
        super().__init__()
        self._subscription = subscription
        self._region = region

    def expand(self, sources: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {name: (messages
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(ACK_CHUNK))
                       | f"Release{name}" >> beam.ParDo(_ReleaseFn(self._subscription, self._region, name)))
                for name, messages in sources.items()}
