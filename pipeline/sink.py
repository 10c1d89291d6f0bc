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
from pipeline.commit_plan import Pending, Work, commit_writes, groups, lanes, waves
from pipeline.firestore_transport import (
    CONFLICTS,
    FirestoreConfig,
    FirestoreTransport,
    Unavailable,
    WriteFailed,
    backoff,
)
from pipeline.ledger import (
    Decision,
    InvalidEvent,
    OrderAggregate,
    UnmappedProduct,
    acts_on_order,
    claim_key,
    decide,
    event_class,
    order_id,
    valid_id,
)
from pipeline.model import Event, reject
from pipeline.observability import RegionMetrics, log
from schemas.verdicts import Verdict

COMMITTED = "committed"
DLQ = "dlq"
RELEASE = "release"
UNAVAILABLE = "unavailable"  # a transient fault outlasted its retries: released or retried, never dead-lettered
WEDGED = Verdict.WEDGED_KEY.value
STEP = "ApplyToLedger"
EVENTS_PER_BUNDLE_BATCH = 1000
COMMIT_THREADS = 8
RESOLVE_ROUNDS = 8
STATUS_OUTCOME = {"applied": "applied", "recorded": "recorded", "ignored": "ignored",
                  "duplicate_business_key": "duplicate", "duplicate": "duplicate"}
DLQ_VERDICT = {v.value: v for v in (Verdict.WRITE_FAILED, Verdict.UNMAPPED_PRODUCT, Verdict.DROP_MALFORMED,
                                    Verdict.WEDGED_KEY)}


@dataclass(frozen=True)
class Applied:
    """The fate of one event: a webhookEvents status, `duplicate` (its doc existed) or a DLQ verdict."""

    event: Event
    status: str
    reason: str = ""
    decision: Decision | None = None


class LedgerWriter:
    """Commits events: several per commit when they share no document (a user's events in one commit, its wallet
    written once), commits in parallel except two writing one wallet, then one by one (re-read, decide again,
    commit) when a precondition fails.

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
            try:
                results.update(self._apply_wave(wave))
            except Exception as exc:  # a bug past the per-group isolation: settle each event alone
                log(logging.ERROR, "ledger wave crashed", error=repr(exc)[:500])
                results.update({i: self._apply_one(e) for i, e, _ in wave})
        return [results[i] for i in range(len(events))]

    def _apply_wave(self, wave: list[Work]) -> dict[int, Applied]:
        results: dict[int, Applied] = {}
        try:
            snaps = self._store.get_all([f"orders/{order_id(e.envelope)}" for _, e, cls in wave
                                         if acts_on_order(e.envelope, cls)])
        except Unavailable as exc:
            return {i: Applied(e, UNAVAILABLE, str(exc)) for i, e, _ in wave}
        except WriteFailed:  # a refused read: each event alone, so the refusal stays with its own
            return {i: self._apply_one(e) for i, e, _ in wave}
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
            except Exception:  # a bug on this event's data: settled alone (crash handling in _apply_one)
                results[i] = self._apply_one(event)
        parallel = lanes(groups(pending))  # one wallet's commits one after another, never at the same time
        done = (map(self._apply_lane, parallel) if self._pool is None or len(parallel) == 1
                else self._pool.map(self._apply_lane, parallel))
        for applied in done:
            results.update(applied)
        return results

    def _apply_lane(self, lane: list[list[Pending]]) -> dict[int, Applied]:
        results: dict[int, Applied] = {}
        for group in lane:
            results.update(self._apply_group(group))
        return results

    def _apply_group(self, group: list[Pending]) -> dict[int, Applied]:
        try:
            self._commit(group)
        except CONFLICTS:  # an exact duplicate, a claimed key or a concurrent change: decided again on fresh reads
            return self._regroup(group) if len(group) > 1 else {group[0].index: self._apply_one(group[0].event)}
        except Unavailable as exc:
            return {p.index: Applied(p.event, UNAVAILABLE, str(exc)) for p in group}
        except WriteFailed as exc:
            if len(group) == 1:
                return {group[0].index: Applied(group[0].event, "write_failed", str(exc))}
            # The commit is atomic, so nothing of it was written: one event's refusal must not sink the others.
            return {p.index: self._apply_one(p.event) for p in group}
        except Exception as exc:  # a bug; the commit may or may not have landed: each event alone finds out
            log(logging.ERROR, "ledger commit crashed", events=len(group), error=repr(exc)[:500])
            return {p.index: self._apply_one(p.event) for p in group}
        return {p.index: Applied(p.event, p.decision.status, p.decision.reason, p.decision) for p in group}

    def _regroup(self, group: list[Pending]) -> dict[int, Applied]:
        """A refused group, once more as a group: every document that decides its events is read again, events
        found committed are duplicates, cycles whose key is claimed duplicate_business_key, the others decided
        again on the aggregates read and committed together (one wallet write for a hot user, not one per event).
        If that commit is refused too, each event alone (`_apply_one`: bounded rounds, wedged keys detected)."""
        paths: dict[int, tuple[str, str | None, str | None]] = {}
        for p in group:
            env = p.event.envelope
            cls = event_class(env)
            claim = claim_key(env, cls)
            paths[p.index] = (f"webhookEvents/{env['eventId']}",
                              f"orders/{order_id(env)}" if acts_on_order(env, cls) else None,
                              f"ledgerKeys/{claim}" if claim else None)
        try:
            snaps = self._store.get_all([x for trio in paths.values() for x in trio if x])
        except (Unavailable, WriteFailed):
            return {p.index: self._apply_one(p.event) for p in group}
        results: dict[int, Applied] = {}
        again: list[Pending] = []
        for p in group:
            event_path, order_path, claim_path = paths[p.index]
            if snaps[event_path].exists:
                results[p.index] = Applied(p.event, "duplicate")
                continue
            aggregate, update_time = self._aggregate(snaps.get(order_path)) if order_path else (None, None)
            try:
                decision = self._decide(p.event, aggregate)
            except Exception:  # its fate (unmapped, malformed, a bug) is settled alone, as on the first pass
                results[p.index] = self._apply_one(p.event)
                continue
            if claim_path and snaps[claim_path].exists:
                decision = decision.as_duplicate()
            again.append(Pending(p.index, p.event, decision, update_time))
        if not again:
            return results
        try:
            self._commit(again)
        except Unavailable as exc:  # transient: released for redelivery, as a group's first commit would be
            results.update({p.index: Applied(p.event, UNAVAILABLE, str(exc)) for p in again})
            return results
        except Exception:  # refused again (or a bug): each event alone finds out, as before this second round
            results.update({p.index: self._apply_one(p.event) for p in again})
            return results
        results.update({p.index: Applied(p.event, p.decision.status, p.decision.reason, p.decision) for p in again})
        return results

    def _apply_one(self, event: Event) -> Applied:
        """The event alone: its fate, never an exception (an unexpected one stays with this event)."""
        try:
            return self._resolve(event)
        except UnmappedProduct as exc:
            return Applied(event, "unmapped_product", str(exc))
        except InvalidEvent as exc:
            return Applied(event, "drop_malformed", str(exc))
        except Unavailable as exc:
            return Applied(event, UNAVAILABLE, str(exc))
        except WriteFailed as exc:
            return Applied(event, "write_failed", str(exc))
        except Exception as exc:
            return self._crashed(event, exc)

    def _resolve(self, event: Event) -> Applied:
        """Re-read, decide again and commit until the commit holds (bounded, jittered), the event is a duplicate,
        or a precondition fails twice on an unchanged state: no writer is changing it, so it can never hold."""
        env = event.envelope
        cls = event_class(env)
        event_path = f"webhookEvents/{env['eventId']}"
        order_path = f"orders/{order_id(env)}" if acts_on_order(env, cls) else None
        claim = claim_key(env, cls)
        claim_path = f"ledgerKeys/{claim}" if claim else None
        paths = [p for p in (event_path, order_path, claim_path) if p]
        refused_on = None
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
            except CONFLICTS:
                state = [(snaps[p].exists, snaps[p].update_time) for p in paths]
                if state == refused_on:
                    return self._wedged(event, decision)
                refused_on = state
                self._sleep(backoff(attempt, base=0.02))  # another worker changed the order: decide again
                continue
            return Applied(event, decision.status, decision.reason, decision)
        # Contention: another writer kept changing the order. Transient, so released, not dead-lettered.
        return Applied(event, UNAVAILABLE, f"preconditions kept failing after {RESOLVE_ROUNDS} rounds")

    def _wedged(self, event: Event, decision: Decision) -> Applied:
        """A key claimed or an entry written outside the commit plan (a hand credit, a partial restore of
        `orders`): redelivery would fail forever and block its ordering key. Dead-lettered, never overwritten."""
        keys = list(decision.entries)
        paths = [f"ledgerKeys/{k}" for k in keys] + [f"users/{decision.uid}/ledger/{k}" for k in keys]
        found = sorted(p for p, snap in self._store.get_all(paths).items() if snap.exists) if keys else []
        held = f": {', '.join(found)} exist(s), orders/{decision.order_id} does not list them" if found else ""
        log(logging.ERROR, "wedged key dead-lettered", eventId=event.envelope["eventId"], found=found,
            region=self._config.region)
        return Applied(event, WEDGED, f"the commit's precondition failed twice on an unchanged state{held}"[:500])

    def _crashed(self, event: Event, exc: Exception) -> Applied:
        """An unexpected error on this event: if its commit landed it is done, else it is dead-lettered alone."""
        log(logging.ERROR, "ledger apply crashed", eventId=event.envelope.get("eventId"), error=repr(exc)[:500])
        event_id = event.envelope.get("eventId")
        try:
            done = valid_id(event_id) and self._store.get_all([f"webhookEvents/{event_id}"])[
                f"webhookEvents/{event_id}"].exists
        except Unavailable as read_exc:
            return Applied(event, UNAVAILABLE, f"crashed ({exc!r}), then could not check its commit: {read_exc}")
        except Exception as read_exc:  # unknown whether it landed: a dead letter, whose replay is idempotent
            return Applied(event, "write_failed", f"crashed ({exc!r}), its commit unknown: {read_exc!r}"[:500])
        if done:
            return Applied(event, "duplicate")
        return Applied(event, "write_failed", f"crashed: {exc!r}"[:500])


class _ApplyFn(beam.DoFn):
    def __init__(self, config: FirestoreConfig) -> None:
        self._config = config

    def setup(self) -> None:
        self._client = self._config.client()
        self._writer = LedgerWriter(self._client, self._config)
        self._metrics = RegionMetrics(self._config.region)

    def process(self, batch: list[Event]) -> Iterator[Any]:
        results = self._writer.apply(batch)  # never raises: an unexpected error stays with its event
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
