"""DedupeEventIds: TTL-bounded memory of eventIds (Beam state, a timer) that drops redeliveries and re-sends."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.pvalue import DoOutputsTuple, PCollection
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from pipeline.model import Event, Message
from pipeline.observability import RegionMetrics, log
from schemas.attributes import REPLAYED_AT

UNIQUE = "unique"
DUPLICATE = "duplicate"
IN_FLIGHT = "in_flight"
Clock = Callable[[], float]


def remember(seen: dict[str, float], event_id: str, now: float, ttl: float) -> tuple[bool, dict[str, float]]:
    """Prune ids seen `ttl` or more seconds ago, then report whether `event_id` is still remembered.

    Returns (is_duplicate, the pruned memory including `event_id`).
    """
    kept = {eid: at for eid, at in seen.items() if now - at < ttl}
    if event_id in kept:
        return True, kept
    kept[event_id] = now
    return False, kept


def dedupe_id(event: Event) -> str:
    """What the dedupe remembers: the eventId, plus the replay time for an operator's DLQ replay.

    A replay must get past the memory of the attempt that dead-lettered it; Pub/Sub redeliveries of that
    replay carry the same attribute and are still dropped. Firestore's create-once commit covers the rest.
    """
    replayed_at = event.message.attributes.get(REPLAYED_AT)
    event_id = str(event.envelope["eventId"])
    return f"{event_id}@replay:{replayed_at}" if replayed_at else event_id


_SEEN = userstate.ReadModifyWriteStateSpec("seen", PickleCoder())
_EXPIRY = userstate.TimerSpec("expiry", TimeDomain.REAL_TIME)
SEEN_STATE = beam.DoFn.StateParam(_SEEN)
EXPIRY_TIMER = beam.DoFn.TimerParam(_EXPIRY)


class TimerDedupeFn(beam.DoFn):
    """Pruning on access plus a processing-time timer that clears the key's memory `ttl` after its last new id."""

    def __init__(self, ttl_seconds: float, region: str, clock: Clock) -> None:
        self._ttl = ttl_seconds
        self._region = region
        self._clock = clock

    def setup(self) -> None:
        self._metrics = RegionMetrics(self._region)

    def process(self, element: tuple[str, Event], seen: Any = SEEN_STATE,
                expiry: Any = EXPIRY_TIMER) -> Iterator[Event | beam.pvalue.TaggedOutput[str, Message]]:
        _, event = element
        duplicate, memory = remember(seen.read() or {}, dedupe_id(event), self._clock(), self._ttl)
        seen.write(memory)
        if not duplicate:
            expiry.set(Timestamp(self._clock() + self._ttl))
            yield event
            return
        self._metrics.outcome("duplicate")
        log(logging.DEBUG, "duplicate event dropped", eventId=event.envelope["eventId"], step="DedupeEventIds",
            region=self._region)
        yield beam.pvalue.TaggedOutput(DUPLICATE, event.message)

    @userstate.on_timer(_EXPIRY)
    def clear(self, seen: Any = SEEN_STATE) -> None:
        seen.clear()


class DedupeEventIds(beam.PTransform[PCollection[tuple[str, Event]], DoOutputsTuple]):
    """(eventId, Event) -> (`unique`: Event, `duplicate`: Message of a dropped copy).

    TimerDedupeFn, whose state the runner commits with the bundle's outputs (DESIGN §3). The acking read on the
    local runner uses pipeline.local.dedupe.ClaimingDedupe instead, under the same step labels.
    """

    def __init__(self, ttl_seconds: float, region: str, *, clock: Clock = time.time) -> None:
        super().__init__()
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._ttl = ttl_seconds
        self._region = region
        self._clock = clock

    def dedupe_fn(self) -> beam.DoFn:
        """The DoFn behind the `Remember` step (a subclass swaps it, keeping the labels Dataflow's update matches)."""
        return TimerDedupeFn(self._ttl, self._region, self._clock)

    def expand(self, keyed: PCollection[tuple[str, Event]]) -> DoOutputsTuple:
        remember = beam.ParDo(self.dedupe_fn())
        outputs: DoOutputsTuple = (
            keyed | "Remember" >> remember.with_outputs(DUPLICATE, IN_FLIGHT, main=UNIQUE))
        return outputs
