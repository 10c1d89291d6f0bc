"""The acking read (DESIGN §3): pull without ack on a PeriodicImpulse, then acknowledge only what is durable and
hand the rest back for redelivery."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import google.cloud.pubsub_v1 as pubsub_v1
from apache_beam.pvalue import PBegin, PCollection
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from google.api_core.exceptions import DeadlineExceeded

from pipeline.batching import BatchInBundle
from pipeline.local.dedupe import claims_for
from pipeline.local.leases import ACK_CHUNK, leases_for
from pipeline.model import Message
from pipeline.observability import RegionMetrics, log
from pipeline.pubsub_io import log_ready, millis

MAX_PULL = 1000
PULL_BUDGET_SECONDS = 0.2
MAX_IN_FLIGHT = 5000
PULL_INTERVAL = 0.05
# A pull without the deprecated return_immediately flag may wait for messages until its deadline: Pub/Sub holds it
# up to the deadline, the emulator up to the deadline less 1 s (so under 1 s it answers at once, as before).
PULL_TIMEOUT = 0.5


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
                    "subscription": self._subscription, "max_messages": MAX_PULL - len(received)},
                    timeout=PULL_TIMEOUT, retry=None)
            except DeadlineExceeded:  # nothing arrived within the wait: an empty answer (Pub/Sub is reachable)
                log_ready(subscription=self._subscription, region=self._region, read="acking")
                log(logging.DEBUG, "pull found nothing before its deadline", region=self._region)
                break
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
            yield Message(bytes(m.data), dict(m.attributes), millis(m.publish_time), m.message_id, m.ordering_key,
                          r.ack_id)

    def teardown(self) -> None:
        self._client.close()


class AckingRead(beam.PTransform[PBegin, PCollection[Message]]):
    """PeriodicImpulse -> pull without ack: messages stay leased until `Acknowledge` (DESIGN §3)."""

    def __init__(self, subscription: str, region: str, interval: float = PULL_INTERVAL) -> None:
        super().__init__()
        self._subscription = subscription
        self._region = region
        self._interval = interval

    def expand(self, begin: PBegin) -> PCollection[Message]:
        messages: PCollection[Message] = (
            begin
            | "Tick" >> PeriodicImpulse(start_timestamp=Timestamp.now(), stop_timestamp=MAX_TIMESTAMP,
                                        fire_interval=self._interval)
            | "Pull" >> beam.ParDo(PullFn(self._subscription, self._region)))
        return messages


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


class Acknowledge(beam.PTransform[dict[str, PCollection[Message]], dict[str, PCollection[None]]]):
    """Acknowledge messages whose fate is durable (committed, dead-lettered, or dropped as duplicates).

    Takes {source: Message} and acknowledges each source on its own branch (see build_pipeline).
    """

    def __init__(self, subscription: str) -> None:
        super().__init__()
        self._subscription = subscription

    def expand(self, sources: dict[str, PCollection[Message]]) -> dict[str, PCollection[None]]:
        return {name: (messages
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(ACK_CHUNK))
                       | f"Ack{name}" >> beam.ParDo(_AckFn(self._subscription)))
                for name, messages in sources.items()}


def hand_back(subscription: str, messages: list[Message]) -> None:
    """Neither acknowledge nor settle: forget their claims, so the redelivered copy passes the dedupe again (not
    acked as a copy of this attempt), then hand their leases back for redelivery (DESIGN §3)."""
    claims_for(subscription).forget(m.claim for m in messages if m.claim)
    leases_for(subscription).hand_back([m.ack_id for m in messages if m.ack_id])


class _ReleaseFn(beam.DoFn):
    def __init__(self, subscription: str, region: str, reason: str) -> None:
        self._subscription = subscription
        self._region = region
        self._reason = reason

    def setup(self) -> None:
        self._metrics = RegionMetrics(self._region)

    def process(self, batch: list[Message]) -> None:
        hand_back(self._subscription, batch)
        self._metrics.released(self._reason, len(batch))


class Release(beam.PTransform[dict[str, PCollection[Message]], dict[str, PCollection[None]]]):
    """Hand messages whose fate is not durable back to Pub/Sub for redelivery: never acked, never dead-lettered.

    Takes {reason: Message}: a copy of an event still in flight, a transient fault that outlasted its retries.
    """

    def __init__(self, subscription: str, region: str) -> None:
        super().__init__()
        self._subscription = subscription
        self._region = region

    def expand(self, sources: dict[str, PCollection[Message]]) -> dict[str, PCollection[None]]:
        return {name: (messages
                       | f"Batch{name}" >> beam.ParDo(BatchInBundle(ACK_CHUNK))
                       | f"Release{name}" >> beam.ParDo(
                           _ReleaseFn(self._subscription, self._region, name)))
                for name, messages in sources.items()}
