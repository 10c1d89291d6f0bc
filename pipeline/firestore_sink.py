"""ApplyToLedger: one atomic Firestore commit per event (event doc, order aggregate, key claims, entries, wallet)."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from google.cloud import firestore

from pipeline import firestore_writes
from pipeline.batching import BatchInBundle
from pipeline.firestore_client import CONFLICT, FirestoreConfig, FirestoreRpc, Unavailable, WriteFailed, backoff
from pipeline.ledger import (
    SUBSCRIPTION,
    Decision,
    InvalidEvent,
    OrderAggregate,
    Product,
    UnmappedProduct,
    acts_on_order,
    decide,
    event_class,
    event_document,
    order_id,
    subscription_key,
)
from pipeline.model import Event, reject
from pipeline.observability import RegionMetrics, log
from schemas import ordering_key
from schemas.attributes import PUSH_SOURCE
from schemas.attributes import SOURCE as SOURCE_ATTRIBUTE
from schemas.verdicts import Verdict

COMMITTED = "committed"
DLQ = "dlq"
RELEASE = "release"
UNAVAILABLE = "unavailable"  # a transient fault outlasted its retries: released or retried, never dead-lettered
STEP = "ApplyToLedger"
MAX_WRITES_PER_COMMIT = 450  # Firestore allows 500; leave room
EVENTS_PER_COMMIT = 50
EVENTS_PER_BUNDLE_BATCH = 1000
COMMIT_THREADS = 8
RESOLVE_ROUNDS = 8
READ_CHUNK = 300
STATUS_OUTCOME = {"applied": "applied", "recorded": "recorded", "ignored": "ignored",
                  "duplicate_business_key": "duplicate", "duplicate": "duplicate"}
DLQ_VERDICT = {v.value: v for v in (Verdict.WRITE_FAILED, Verdict.UNMAPPED_PRODUCT, Verdict.DROP_MALFORMED)}


class ProductCatalog:
    """`products/*` cached in memory, reloaded every `refresh_seconds` (or sooner when an id is missing)."""

    MIN_RELOAD_GAP = 2.0

    def __init__(self, load: Callable[[], dict[str, Product]], refresh_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._refresh = refresh_seconds
        self._clock = clock
        self._products: dict[str, Product] = {}
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()  # the commit threads decide again after a conflict

    def products(self, *, missing: bool = False) -> dict[str, Product]:
        with self._lock:
            age = self._clock() - self._loaded_at
            if age >= self._refresh or (missing and age >= self.MIN_RELOAD_GAP):
                self._products = self._load()
                self._loaded_at = self._clock()
            return self._products


@dataclass(frozen=True)
class Applied:
    """The fate of one event: a webhookEvents status, `duplicate` (its doc existed) or a DLQ verdict."""

    event: Event
    status: str
    reason: str = ""
    decision: Decision | None = None


@dataclass(frozen=True)
class _Pending:
    """A decided event and the version of its order aggregate the decision was made on (None: absent)."""

    index: int
    event: Event
    decision: Decision
    update_time: Any = None


class LedgerWriter:
    """Commits events: several per commit when they share no document, commits in parallel, then one by one
    (re-read, decide again, commit) when a precondition fails.

    Parallel commits are safe: every order-event commit is conditioned on the aggregate version it read, and
    every entry on its key's claim, so a concurrent commit makes ours fail and be decided again (ledger spec).
    """

    def __init__(self, client: firestore.Client, config: FirestoreConfig, catalog: ProductCatalog | None = None,
                 sleep: Callable[[float], None] = time.sleep, threads: int = COMMIT_THREADS) -> None:
        self._client = client
        self._config = config
        self._sleep = sleep
        self._rpc = FirestoreRpc(config.region, config.max_write_attempts, sleep)
        self._catalog = catalog or ProductCatalog(lambda: self._rpc.call(lambda: load_products(client)),
                                                  config.product_refresh_seconds)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ledger-commit") if threads > 1 else None
        self._root = f"projects/{config.project}/databases/{config.database}/documents"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- reading

    def _get_all(self, paths: list[str]) -> dict[str, Any]:
        """Snapshots by path, read in chunks (one RPC per chunk), with transient errors retried."""
        found: dict[str, Any] = {}
        for start in range(0, len(paths), READ_CHUNK):
            refs = [self._client.document(p) for p in paths[start:start + READ_CHUNK]]
            # retry=None: our own bounded, logged retries, not the client's silent ones
            snaps = self._rpc.call(lambda refs=refs: list(self._client.get_all(refs, timeout=10, retry=None)))
            found.update({s.reference.path: s for s in snaps})
        return found

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

    # -- writing

    def _commit(self, items: list[_Pending]) -> None:
        """One atomic commit: each event doc, aggregate (conditioned), claims and entries; one Increment per wallet."""
        root = self._root
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(days=self._config.event_ttl_days)
        deltas: dict[str, int] = {}
        writes = []
        for p in items:
            env, d = p.event.envelope, p.decision
            published = dt.datetime.fromtimestamp(p.event.message.publish_time_ms / 1000, dt.UTC)
            doc = event_document(env, d, ordering_key=ordering_key(env), worker_region=self._config.region,
                                 published_at=published, expires_at=expires,
                                 source=p.event.message.attributes.get(SOURCE_ATTRIBUTE, PUSH_SOURCE))
            writes.append(firestore_writes.create(f"{root}/webhookEvents/{env['eventId']}", doc, ("processedAt",)))
            if d.aggregate is not None:
                writes.append(firestore_writes.replace_if_unchanged(
                    f"{root}/orders/{d.order_id}", {"orderId": d.order_id, **d.aggregate.to_doc()}, p.update_time,
                    ("updatedAt",)))
            for key, entry in d.entries.items():
                writes.append(firestore_writes.create(f"{root}/ledgerKeys/{key}",
                                                      {"uid": d.uid, "eventId": env["eventId"],
                                                       "amount": entry["amount"]}))
                writes.append(firestore_writes.create(f"{root}/users/{d.uid}/ledger/{key}", entry, ("createdAt",)))
            if d.entries:
                assert d.uid is not None
                deltas[d.uid] = deltas.get(d.uid, 0) + d.delta()
        for uid, delta in deltas.items():
            writes.append(firestore_writes.increment(f"{root}/users/{uid}/wallet/points",
                                                     {"paidBalance": delta, "promoBalance": 0}, ("updatedAt",)))
        self._rpc.call(lambda: self._send(writes))

    def _send(self, writes: list[Any]) -> None:
        # The GAPIC call the client's WriteBatch makes, with the client's routing and emulator metadata.
        self._client._firestore_api.commit(
            request=firestore_writes.commit_request(f"projects/{self._config.project}/databases/"
                                                    f"{self._config.database}", writes),
            metadata=self._client._rpc_metadata, timeout=10, retry=None)

    # -- scheduling

    @staticmethod
    def _paths(event: Event, cls: str) -> set[str]:
        paths = {f"webhookEvents/{event.envelope['eventId']}"}
        if acts_on_order(event.envelope, cls):
            paths.add(f"orders/{order_id(event.envelope)}")
        elif cls == SUBSCRIPTION:
            paths.add(f"ledgerKeys/{subscription_key(event.envelope)}")
        return paths

    def _waves(self, work: list[tuple[int, Event, str]]) -> list[list[tuple[int, Event, str]]]:
        """Events touching the same document (event id, order aggregate, subscription key) land in successive
        waves, in arrival order; events within a wave share no document."""
        waves: list[tuple[set[str], list[tuple[int, Event, str]]]] = []
        for item in work:
            mine = self._paths(item[1], item[2])
            target = 1 + max((w for w, (paths, _) in enumerate(waves) if paths & mine), default=-1)
            if target == len(waves):
                waves.append((set(), []))
            waves[target][0].update(mine)
            waves[target][1].append(item)
        return [items for _, items in waves]

    @staticmethod
    def _groups(pending: list[_Pending]) -> list[list[_Pending]]:
        """Commit groups of one wave, each user's events kept together so parallel commits never contend
        for the same wallet document."""
        by_user: dict[str, list[_Pending]] = {}
        for p in pending:
            by_user.setdefault(p.decision.uid or f"event:{p.event.envelope['eventId']}", []).append(p)
        groups: list[list[_Pending]] = [[]]
        writes = 0
        for user_items in by_user.values():
            for p in user_items:
                cost = 3 + 2 * len(p.decision.entries)  # event doc, aggregate, wallet + claim and entry each
                if groups[-1] and (writes + cost > MAX_WRITES_PER_COMMIT or len(groups[-1]) >= EVENTS_PER_COMMIT):
                    groups.append([])
                    writes = 0
                groups[-1].append(p)
                writes += cost
        return [g for g in groups if g]

    def apply(self, events: list[Event]) -> list[Applied]:
        """Apply every event exactly once; the results are in the order of `events`."""
        results: dict[int, Applied] = {}
        work = []
        for i, event in enumerate(events):
            try:
                work.append((i, event, event_class(event.envelope)))
            except InvalidEvent as exc:
                results[i] = Applied(event, "drop_malformed", str(exc))
        for wave in self._waves(work):
            results.update(self._apply_wave(wave))
        return [results[i] for i in range(len(events))]

    def _apply_wave(self, wave: list[tuple[int, Event, str]]) -> dict[int, Applied]:
        results: dict[int, Applied] = {}
        try:
            snaps = self._get_all([f"orders/{order_id(e.envelope)}" for _, e, cls in wave
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
                pending.append(_Pending(i, event, self._decide(event, aggregate), update_time))
            except UnmappedProduct as exc:
                results[i] = Applied(event, "unmapped_product", str(exc))
            except InvalidEvent as exc:
                results[i] = Applied(event, "drop_malformed", str(exc))
            except Unavailable as exc:  # the catalog could not be loaded (yet)
                results[i] = Applied(event, UNAVAILABLE, f"catalog: {exc}")
            except WriteFailed as exc:
                results[i] = Applied(event, "write_failed", f"catalog: {exc}")
        groups = self._groups(pending)
        done = (map(self._apply_group, groups) if self._pool is None or len(groups) == 1
                else self._pool.map(self._apply_group, groups))
        for applied in done:
            results.update(applied)
        return results

    def _apply_group(self, group: list[_Pending]) -> dict[int, Applied]:
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
                snaps = self._get_all(paths)
                if snaps[event_path].exists:
                    return Applied(event, "duplicate")
                aggregate, update_time = self._aggregate(snaps.get(order_path)) if order_path else (None, None)
                decision = self._decide(event, aggregate)
                if claim_path and snaps[claim_path].exists:
                    decision = decision.as_duplicate()
                try:
                    self._commit([_Pending(0, event, decision, update_time)])
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


def load_products(client: firestore.Client) -> dict[str, Product]:
    """Every valid `products/{id}` document; an invalid one is logged and left out."""
    products = {}
    for snap in client.collection("products").stream(timeout=30):
        try:
            products[snap.id] = Product.from_doc(snap.to_dict() or {})
        except ValueError as exc:
            log(logging.WARNING, "invalid product document ignored", productId=snap.id, error=str(exc))
    return products


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


class ApplyToLedger(beam.PTransform):
    """Event (with uid if a credit unit) -> (`committed`: Message to acknowledge, `dlq`: Rejected, `release`:
    Message whose transient fault outlasted its retries, to hand back to Pub/Sub)."""

    def __init__(self, config: FirestoreConfig, events_per_batch: int = EVENTS_PER_BUNDLE_BATCH) -> None:
        super().__init__()
        self._config = config
        self._events_per_batch = events_per_batch

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (events
                | "Batch" >> beam.ParDo(BatchInBundle(self._events_per_batch))
                | "Commit" >> beam.ParDo(_ApplyFn(self._config)).with_outputs(DLQ, RELEASE, main=COMMITTED))
