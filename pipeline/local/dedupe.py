"""The acking read's dedupe (DESIGN §3): claims shared with Acknowledge and Release, pruned on access."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from pipeline.dedupe import DUPLICATE, IN_FLIGHT, Clock, DedupeEventIds, dedupe_id
from pipeline.model import Event
from pipeline.observability import RegionMetrics, log

NEW = "new"
SETTLED = "settled"
STALE_CLAIM_SECONDS = 900.0  # a claim never settled nor released (a bug) stops blocking its copies after this


class Claims:
    """The acking read's dedupe memory, one per subscription and process (DESIGN §3, what may be acked).

    A copy that passes *claims* its id (in flight). The id is *settled* only by the Acknowledge step, i.e. after
    its commit, its confirmed DLQ publish, or Firestore showing it committed; a settled id drops later copies
    (acked) for `ttl` seconds. A copy of an id still in flight is released, never acked; an id whose copy was
    released for redelivery (DLQ publish failed, Firestore transiently down) is forgotten, so its redelivery
    passes again.
    """

    def __init__(self, ttl: float, clock: Clock = time.monotonic, stale_after: float = STALE_CLAIM_SECONDS) -> None:
        self.ttl = ttl
        self._clock = clock
        self._stale_after = stale_after
        self._settled: OrderedDict[str, float] = OrderedDict()  # by settle time, oldest first
        self._in_flight: OrderedDict[str, float] = OrderedDict()  # by claim time, oldest first
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        while self._settled and now - next(iter(self._settled.values())) >= self.ttl:
            self._settled.popitem(last=False)
        while self._in_flight and now - next(iter(self._in_flight.values())) >= self._stale_after:
            self._in_flight.popitem(last=False)

    def claim(self, key: str) -> str:
        """NEW (now claimed by the caller), SETTLED (durable: drop and ack) or IN_FLIGHT (release this copy)."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            if key in self._settled:
                return SETTLED
            if key in self._in_flight:
                return IN_FLIGHT
            self._in_flight[key] = now
            return NEW

    def settle(self, keys: Iterable[str]) -> None:
        with self._lock:
            now = self._clock()
            for key in keys:
                self._in_flight.pop(key, None)
                self._settled[key] = now
                self._settled.move_to_end(key)

    def forget(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._in_flight.pop(key, None)

    def __len__(self) -> int:
        return len(self._settled) + len(self._in_flight)


_claims: dict[str, Claims] = {}
_claims_lock = threading.Lock()


def claims_for(subscription: str, ttl: float | None = None) -> Claims:
    """The process-wide Claims of a subscription (shared by the dedupe, acknowledge and release steps)."""
    with _claims_lock:
        if subscription not in _claims:
            _claims[subscription] = Claims(ttl if ttl is not None else 3600.0)
        elif ttl is not None:
            _claims[subscription].ttl = ttl
        return _claims[subscription]


class ClaimingDedupeFn(beam.DoFn):
    """The acking read's dedupe: Claims shared with the Acknowledge step, so a copy is dropped (and acked) only
    when an earlier copy's fate is durable. No Beam state: the runner cannot learn of an ack after the step."""

    def __init__(self, subscription: str, ttl_seconds: float, region: str) -> None:
        self._subscription = subscription
        self._ttl = ttl_seconds
        self._region = region

    def setup(self) -> None:
        self._metrics = RegionMetrics(self._region)
        self._claims = claims_for(self._subscription, self._ttl)

    def process(self, element: tuple[str, Event]) -> Iterator[Any]:
        _, event = element
        key = dedupe_id(event)
        verdict = self._claims.claim(key)
        if verdict == NEW:
            # The claim travels with the message: Acknowledge settles it, a release forgets it.
            yield dataclasses.replace(event, message=dataclasses.replace(event.message, claim=key))
        elif verdict == SETTLED:
            self._metrics.outcome("duplicate")
            log(logging.DEBUG, "duplicate event dropped", eventId=event.envelope["eventId"], step="DedupeEventIds",
                region=self._region)
            yield beam.pvalue.TaggedOutput(DUPLICATE, event.message)
        else:
            log(logging.DEBUG, "copy of an event in flight released", eventId=event.envelope["eventId"],
                step="DedupeEventIds", region=self._region)
            yield beam.pvalue.TaggedOutput(IN_FLIGHT, event.message)


class ClaimingDedupe(DedupeEventIds):
    """DedupeEventIds for the acking read: (eventId, Event) -> (`unique`: Event with its claim, `duplicate`:
    Message to acknowledge, `in_flight`: Message to release). Same step labels as DedupeEventIds."""

    def __init__(self, subscription: str, ttl_seconds: float, region: str) -> None:
        super().__init__(ttl_seconds, region)
        self._subscription = subscription

    def dedupe_fn(self) -> beam.DoFn:
        return ClaimingDedupeFn(self._subscription, self._ttl, self._region)
