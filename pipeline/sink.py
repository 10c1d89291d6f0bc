"""ApplyToLedger: decide each event on what Firestore holds, commit its plan, retry conflicts one by one."""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection
from google.cloud import firestore

from pipeline.batching import BatchInBundle
from pipeline.caches import ProductCatalog
from pipeline.commit_plan import Pending, Work, commit_writes, groups, waves
from pipeline.firestore_transport import (
    CONFLICT,
    FirestoreConfig,
    FirestoreTransport,
    Unavailable,
    WriteFailed,
    backoff,
)
from pipeline.ledger import (
    SUBSCRIPTION,
    Decision,
    InvalidEvent,
    OrderAggregate,
    UnmappedProduct,
    acts_on_order,
    decide,
    event_class,
    order_id,
    subscription_key,
)
from pipeline.model import Event, reject
from pipeline.observability import RegionMetrics, log
from schemas.verdicts import Verdict

COMMITTED = "committed"
DLQ = "dlq"
RELEASE = "release"
UNAVAILABLE = "unavailable"  # a transient fault outlasted its retries: released or retried, never dead-lettered
STEP = "ApplyToLedger"
EVENTS_PER_BUNDLE_BATCH = 1000
COMMIT_THREADS = 8
RESOLVE_ROUNDS = 8
STATUS_OUTCOME = {"applied": "applied", "recorded": "recorded", "ignored": "ignored",
                  "duplicate_business_key": "duplicate", "duplicate": "duplicate"}
DLQ_VERDICT = {v.value: v for v in (Verdict.WRITE_FAILED, Verdict.UNMAPPED_PRODUCT, Verdict.DROP_MALFORMED)}


@dataclass(frozen=True)
class Applied:
    """The fate of one event: a webhookEvents status, `duplicate` (its doc existed) or a DLQ verdict."""

    event: Event
    status: str
    reason: str = ""
    decision: Decision | None = None


class LedgerWriter:
    """Commits events: several per commit when they share no document, commits in parallel, then one by one
    (re-read, decide again, commit) when a precondition fails.

    Parallel commits are safe: every order-event commit is conditioned on the aggregate version it read, and
    every entry on its key's claim, so a concurrent commit makes ours fail and be decided again (ledger spec).
    """

    def __init__(self, client: firestore.Client, config: FirestoreConfig, catalog: ProductCatalog | None = None,
                 sleep: Callable[[float], None] = time.sleep, threads: int = COMMIT_THREADS) -> None:
        self._config = config
        self._sleep = sleep
        self._store = FirestoreTransport(client, config, sleep)
        self._catalog = catalog or ProductCatalog(self._store.products, config.product_refresh_seconds)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ledger-commit") if threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- reading

    @staticmethod
    def _aggregate(snap: Any) -> tuple[OrderAggregate | None, Any]:
        if snap is None or not snap.exists:
            return None, None
        return OrderAggregate.from_doc(snap.to_dict() or {}), snap.update_time.timestamp_pb()

    def _decide(self, event: Event, aggregate: OrderAggregate | None) -> Decision:
        try:
            return decide(event.envelope, self._catalog.products(), event.uid, aggregate)
        except UnmappedProduct:  # a product added since the catalog was loaded: reload (rate-limited) once
            return decide(event.envelope, self._catalog.products(missing=True), event.uid, aggregate)

    def _commit(self, items: list[Pending]) -> None:
        self._store.commit(commit_writes(items, worker_region=self._config.region, now=dt.datetime.now(dt.UTC),
                                         event_ttl_days=self._config.event_ttl_days))

    def apply(self, events: list[Event]) -> list[Applied]:
        """Apply every event exactly once; the results are in the order of `events`."""
        results: dict[int, Applied] = {}
        work = []
        for i, event in enumerate(events):
            try:
                work.append((i, event, event_class(event.envelope)))
            except InvalidEvent as exc:
                results[i] = Applied(event, "drop_malformed", str(exc))
        for wave in waves(work):
            results.update(self._apply_wave(wave))
        return [results[i] for i in range(len(events))]

    def _apply_wave(self, wave: list[Work]) -> dict[int, Applied]:
        results: dict[int, Applied] = {}
        try:
            snaps = self._store.get_all([f"orders/{order_id(e.envelope)}" for _, e, cls in wave
                                         if acts_on_order(e.envelope, cls)])
        except Unavailable as exc:
            return {i: Applied(e, UNAVAILABLE, str(exc)) for i, e, _ in wave}
        except WriteFailed as exc:
            return {i: Applied(e, "write_failed", str(exc)) for i, e, _ in wave}
        pending = []
        for i, event, cls in wave:
            aggregate, update_time = (self._aggregate(snaps.get(f"orders/{order_id(event.envelope)}"))
                                      if acts_on_order(event.envelope, cls) else (None, None))
            try:
                pending.append(Pending(i, event, self._decide(event, aggregate), update_time))
            except UnmappedProduct as exc:
                results[i] = Applied(event, "unmapped_product", str(exc))
            except InvalidEvent as exc:
                results[i] = Applied(event, "drop_malformed", str(exc))
            except Unavailable as exc:  # the catalog could not be loaded (yet)
                results[i] = Applied(event, UNAVAILABLE, f"catalog: {exc}")
            except WriteFailed as exc:
                results[i] = Applied(event, "write_failed", f"catalog: {exc}")
        commits = groups(pending)
        done = (map(self._apply_group, commits) if self._pool is None or len(commits) == 1
                else self._pool.map(self._apply_group, commits))
        for applied in done:
            results.update(applied)
        return results

    def _apply_group(self, group: list[Pending]) -> dict[int, Applied]:
        try:
            self._commit(group)
        except CONFLICT:  # an exact duplicate, a claimed key or a concurrent change: sort them out one by one
            return {p.index: self._apply_one(p.event) for p in group}
        except Unavailable as exc:
            return {p.index: Applied(p.event, UNAVAILABLE, str(exc)) for p in group}
        except WriteFailed as exc:
            return {p.index: Applied(p.event, "write_failed", str(exc)) for p in group}
        return {p.index: Applied(p.event, p.decision.status, p.decision.reason, p.decision) for p in group}

    def _apply_one(self, event: Event) -> Applied:
        """Re-read, decide again and commit until the commit holds (bounded, jittered) or the event is a duplicate."""
        env = event.envelope
        cls = event_class(env)
        event_path = f"webhookEvents/{env['eventId']}"
        order_path = f"orders/{order_id(env)}" if acts_on_order(env, cls) else None
        claim_path = f"ledgerKeys/{subscription_key(env)}" if cls == SUBSCRIPTION else None
        paths = [p for p in (event_path, order_path, claim_path) if p]
        try:
            for attempt in range(1, RESOLVE_ROUNDS + 1):
                snaps = self._store.get_all(paths)
                if snaps[event_path].exists:
                    return Applied(event, "duplicate")
                aggregate, update_time = self._aggregate(snaps.get(order_path)) if order_path else (None, None)
                decision = self._decide(event, aggregate)
                if claim_path and snaps[claim_path].exists:
                    decision = decision.as_duplicate()
                try:
                    self._commit([Pending(0, event, decision, update_time)])
                except CONFLICT:
                    self._sleep(backoff(attempt, base=0.02))  # another worker changed the order: decide again
                    continue
                return Applied(event, decision.status, decision.reason, decision)
        except UnmappedProduct as exc:
            return Applied(event, "unmapped_product", str(exc))
        except Unavailable as exc:
            return Applied(event, UNAVAILABLE, str(exc))
        except WriteFailed as exc:
            return Applied(event, "write_failed", str(exc))
        # Contention: another writer kept changing the order. Transient, so released, not dead-lettered.
        return Applied(event, UNAVAILABLE, f"preconditions kept failing after {RESOLVE_ROUNDS} rounds")


class _ApplyFn(beam.DoFn):
    def __init__(self, config: FirestoreConfig) -> None:
        self._config = config

    def setup(self) -> None:
        self._client = self._config.client()
        self._writer = LedgerWriter(self._client, self._config)
        self._metrics = RegionMetrics(self._config.region)

    def process(self, batch: list[Event]) -> Iterator[Any]:
        try:
            results = self._writer.apply(batch)
        except Exception as exc:  # unexpected; the idempotent commit makes a replay from the DLQ safe
            log(logging.ERROR, "ledger commit crashed", error=repr(exc)[:500])
            results = [Applied(e, "write_failed", f"commit crashed: {exc!r}"[:500]) for e in batch]
        now = time.time()
        unavailable = [r for r in results if r.status == UNAVAILABLE]
        if unavailable and not self._config.release_transient:
            # Native read (Dataflow): the message is checkpointed, so the bundle must fail and be retried; the
            # idempotent commit absorbs what this bundle already committed.
            raise Unavailable(f"{len(unavailable)} events: {unavailable[0].reason}"[:500])
        for result in results:
            event = result.event
            if result.status == UNAVAILABLE:
                log(logging.WARNING, "event released for redelivery", eventId=event.envelope["eventId"],
                    reason=result.reason[:300], region=self._config.region)
                yield beam.pvalue.TaggedOutput(RELEASE, event.message)
                continue
            if result.status in DLQ_VERDICT:
                yield beam.pvalue.TaggedOutput(DLQ, reject(event, DLQ_VERDICT[result.status], result.reason[:500],
                                                           STEP))
                continue
            self._metrics.outcome(STATUS_OUTCOME[result.status])
            latency = now - event.message.publish_time_ms / 1000
            if result.status != "duplicate":
                self._metrics.latency(latency)
            # latencyMs (publish -> commit) feeds the worker_processing_p95_by_region log metric (deploy/).
            uid = result.decision.uid if result.decision else event.uid
            log(logging.DEBUG, "event committed", eventId=event.envelope["eventId"], status=result.status,
                uid=uid, region=self._config.region, latencyMs=round(latency * 1000, 1))
            yield event.message

    def teardown(self) -> None:
        self._writer.close()
        self._client.close()


class ApplyToLedger(beam.PTransform[PCollection[Event], DoOutputsTuple]):
    """Event (with uid if a credit unit) -> (`committed`: Message to acknowledge, `dlq`: Rejected, `release`:
    Message whose transient fault outlasted its retries, to hand back to Pub/Sub)."""

    def __init__(self, config: FirestoreConfig, events_per_batch: int = EVENTS_PER_BUNDLE_BATCH) -> None:
        super().__init__()
        self._config = config
        self._events_per_batch = events_per_batch

    def expand(self, events: PCollection[Event]) -> DoOutputsTuple:
        batch = beam.ParDo(BatchInBundle(self._events_per_batch))
        commit = beam.ParDo(_ApplyFn(self._config))
        outputs: DoOutputsTuple = (
            events | "Batch" >> batch
            | "Commit" >> commit.with_outputs(DLQ, RELEASE, main=COMMITTED))
        return outputs
