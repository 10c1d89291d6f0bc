"""ApplyToLedger: exactly-once Firestore commits (event doc + ledger entries + wallet Increment, atomically)."""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from google.cloud import firestore

from pipeline import firestore_writes
from pipeline.batching import BatchInBundle
from pipeline.firestore_client import CONFLICT, FirestoreConfig, WriteFailed, with_retries
from pipeline.ledger import EventWrites, InvalidEvent, Product, UnmappedProduct, event_document, plan_event
from pipeline.model import Event, reject
from pipeline.observability import RegionMetrics, log
from schemas import ordering_key

COMMITTED = "committed"
DLQ = "dlq"
STEP = "ApplyToLedger"
MAX_WRITES_PER_COMMIT = 450  # Firestore allows 500; leave room
EVENTS_PER_COMMIT = 50
EVENTS_PER_BUNDLE_BATCH = 1000
COMMIT_THREADS = 8
RESOLVE_ROUNDS = 3
STATUS_OUTCOME = {"applied": "applied", "recorded": "recorded", "duplicate_business_key": "duplicate",
                  "duplicate": "duplicate"}


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

    def products(self, *, missing: bool = False) -> dict[str, Product]:
        age = self._clock() - self._loaded_at
        if age >= self._refresh or (missing and age >= self.MIN_RELOAD_GAP):
            self._products = self._load()
            self._loaded_at = self._clock()
        return self._products


@dataclass(frozen=True)
class Planned:
    event: Event
    writes: EventWrites


@dataclass(frozen=True)
class Applied:
    """The fate of one planned event: a webhookEvents status, `duplicate` (doc existed) or `write_failed`."""

    planned: Planned
    status: str
    reason: str = ""


class LedgerWriter:
    """Commits planned events: several per commit, commits in parallel, one by one when a precondition fails.

    Parallel commits are safe because the final state does not depend on the order of events (DESIGN §4).
    """

    def __init__(self, client: firestore.Client, config: FirestoreConfig,
                 sleep: Callable[[float], None] = time.sleep, threads: int = COMMIT_THREADS) -> None:
        self._client = client
        self._config = config
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ledger-commit") if threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _event_ref(self, event_id: str) -> Any:
        return self._client.collection("webhookEvents").document(event_id)

    def _entry_ref(self, uid: str, entry_id: str) -> Any:
        return self._client.collection("users").document(uid).collection("ledger").document(entry_id)

    def _paths(self, p: Planned) -> set[str]:
        return {f"webhookEvents/{p.writes.event_id}"} | {f"users/{p.writes.uid}/ledger/{e}" for e in p.writes.entries}

    def _commit(self, items: list[tuple[Planned, list[str]]]) -> None:
        """One atomic commit creating each event doc and the given entries, with one Increment per wallet."""
        root = f"projects/{self._config.project}/databases/{self._config.database}/documents"
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(days=self._config.event_ttl_days)
        deltas: dict[str, int] = {}
        writes = []
        for p, entry_ids in items:
            env = p.event.envelope
            published = dt.datetime.fromtimestamp(p.event.message.publish_time_ms / 1000, dt.UTC)
            doc = event_document(env, p.writes, entry_ids, ordering_key=ordering_key(env),
                                 worker_region=self._config.region, published_at=published, processed_at=None,
                                 expires_at=expires)
            del doc["processedAt"]  # the commit's own time, set by the server
            writes.append(firestore_writes.create(f"{root}/webhookEvents/{p.writes.event_id}", doc,
                                                  ("processedAt",)))
            for entry_id in entry_ids:
                writes.append(firestore_writes.create(f"{root}/users/{p.writes.uid}/ledger/{entry_id}",
                                                      p.writes.entries[entry_id], ("createdAt",)))
            if entry_ids:
                deltas[p.writes.uid] = deltas.get(p.writes.uid, 0) + p.writes.delta(entry_ids)
        for uid, delta in deltas.items():
            writes.append(firestore_writes.increment(f"{root}/users/{uid}/wallet/points",
                                                     {"paidBalance": delta, "promoBalance": 0}, ("updatedAt",)))
        with_retries(lambda: self._send(writes), self._config.max_write_attempts, self._sleep)

    def _send(self, writes: list[Any]) -> None:
        # The GAPIC call the client's WriteBatch makes, with the client's routing and emulator metadata.
        self._client._firestore_api.commit(
            request=firestore_writes.commit_request(f"projects/{self._config.project}/databases/"
                                                    f"{self._config.database}", writes),
            metadata=self._client._rpc_metadata, timeout=10, retry=None)

    def _waves(self, planned: list[Planned]) -> list[list[list[int]]]:
        """Indexes of `planned` as waves of commit groups.

        Events touching the same document (event id or business key) land in successive waves, in arrival
        order, so the first to arrive is the one credited; groups within a wave share no document and run in
        parallel.
        """
        waves: list[tuple[set[str], list[int]]] = []
        for i, p in enumerate(planned):
            mine = self._paths(p)
            target = 1 + max((w for w, (paths, _) in enumerate(waves) if paths & mine), default=-1)
            if target == len(waves):
                waves.append((set(), []))
            waves[target][0].update(mine)
            waves[target][1].append(i)
        return [self._groups(planned, indexes) for _, indexes in waves]

    def _groups(self, planned: list[Planned], indexes: list[int]) -> list[list[int]]:
        """Commit groups of one wave, each user's events kept together so parallel commits never contend
        for the same wallet document."""
        by_user: dict[str, list[int]] = {}
        for i in indexes:
            by_user.setdefault(planned[i].writes.uid, []).append(i)
        groups: list[list[int]] = [[]]
        writes = 0
        for user_indexes in by_user.values():
            for i in user_indexes:
                cost = len(self._paths(planned[i])) + 1  # + its wallet
                if groups[-1] and (writes + cost > MAX_WRITES_PER_COMMIT or len(groups[-1]) >= EVENTS_PER_COMMIT):
                    groups.append([])
                    writes = 0
                groups[-1].append(i)
                writes += cost
        return groups

    def apply(self, planned: list[Planned]) -> list[Applied]:
        """Apply every planned event exactly once; the results are in the order of `planned`."""
        results: dict[int, Applied] = {}
        for groups in self._waves(planned):
            def run(group: list[int]) -> list[Applied]:
                return self._apply_group([planned[i] for i in group])

            done = map(run, groups) if self._pool is None or len(groups) == 1 else self._pool.map(run, groups)
            for group, applied in zip(groups, done, strict=True):
                results.update(zip(group, applied, strict=True))
        return [results[i] for i in range(len(planned))]

    def _apply_group(self, group: list[Planned]) -> list[Applied]:
        if len(group) == 1:
            return [self._apply_one(group[0])]
        try:
            self._commit([(p, list(p.writes.entries)) for p in group])
        except CONFLICT:
            return [self._apply_one(p) for p in group]  # somebody's key exists: find whose
        except WriteFailed as exc:
            return [Applied(p, "write_failed", str(exc)) for p in group]
        return [Applied(p, "applied" if p.writes.entries else "recorded") for p in group]

    def _apply_one(self, p: Planned) -> Applied:
        entry_ids = list(p.writes.entries)
        try:
            for _ in range(RESOLVE_ROUNDS):
                try:
                    self._commit([(p, entry_ids)])
                except CONFLICT:
                    missing = self._missing_entries(p)
                    if missing is None:
                        return Applied(p, "duplicate")
                    entry_ids = missing
                    continue
                status = "recorded" if not p.writes.entries else "applied" if entry_ids else "duplicate_business_key"
                return Applied(p, status)
        except WriteFailed as exc:
            return Applied(p, "write_failed", str(exc))
        return Applied(p, "write_failed", f"create precondition kept failing after {RESOLVE_ROUNDS} rounds")

    def _missing_entries(self, p: Planned) -> list[str] | None:
        """None if the event doc exists (a duplicate); else the entries not yet in the ledger."""
        attempts = self._config.max_write_attempts
        event_ref = self._event_ref(p.writes.event_id)
        if with_retries(lambda: event_ref.get(timeout=10), attempts, self._sleep).exists:
            return None
        refs = [self._entry_ref(p.writes.uid, e) for e in p.writes.entries]
        snaps = with_retries(lambda: list(self._client.get_all(refs, timeout=10)), attempts, self._sleep)
        existing = {s.id for s in snaps if s.exists}
        return [e for e in p.writes.entries if e not in existing]


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
        self._catalog = ProductCatalog(
            lambda: with_retries(lambda: load_products(self._client), self._config.max_write_attempts),
            self._config.product_refresh_seconds)
        self._metrics = RegionMetrics(self._config.region)

    def _plan(self, event: Event) -> Planned:
        assert event.uid, "ResolveAccount sets the uid"
        try:
            return Planned(event, plan_event(event.envelope, self._catalog.products(), event.uid))
        except UnmappedProduct:
            return Planned(event, plan_event(event.envelope, self._catalog.products(missing=True), event.uid))

    def process(self, batch: list[Event]) -> Iterator[Any]:
        planned: list[Planned] = []
        for event in batch:
            try:
                planned.append(self._plan(event))
            except UnmappedProduct as exc:
                yield beam.pvalue.TaggedOutput(DLQ, reject(event, "unmapped_product", str(exc), STEP))
            except InvalidEvent as exc:
                yield beam.pvalue.TaggedOutput(DLQ, reject(event, "drop_malformed", str(exc), STEP))
            except Exception as exc:  # catalog unreachable, or a bug: dead-letter it, never kill the job
                yield beam.pvalue.TaggedOutput(DLQ, reject(event, "write_failed", f"planning failed: {exc!r}"[:500],
                                                           STEP))
        try:
            results = self._writer.apply(planned)
        except Exception as exc:  # unexpected; the idempotent commit makes a replay from the DLQ safe
            log(logging.ERROR, "ledger commit crashed", error=repr(exc)[:500])
            results = [Applied(p, "write_failed", f"commit crashed: {exc!r}"[:500]) for p in planned]
        now = time.time()
        for result in results:
            event = result.planned.event
            if result.status == "write_failed":
                yield beam.pvalue.TaggedOutput(DLQ, reject(event, "write_failed", result.reason, STEP))
                continue
            self._metrics.outcome(STATUS_OUTCOME[result.status])
            latency = now - event.message.publish_time_ms / 1000
            if result.status != "duplicate":
                self._metrics.latency(latency)
            # latencyMs (publish -> commit) feeds the worker_processing_p95_by_region log metric (deploy/).
            log(logging.DEBUG, "event committed", eventId=event.envelope["eventId"], status=result.status,
                uid=event.uid, region=self._config.region, latencyMs=round(latency * 1000, 1))
            yield event.message

    def teardown(self) -> None:
        self._writer.close()
        self._client.close()


class ApplyToLedger(beam.PTransform):
    """Event (with uid) -> (`committed`: Message to acknowledge, `dlq`: Rejected)."""

    def __init__(self, config: FirestoreConfig, events_per_batch: int = EVENTS_PER_BUNDLE_BATCH) -> None:
        super().__init__()
        self._config = config
        self._events_per_batch = events_per_batch

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (events
                | "Batch" >> beam.ParDo(BatchInBundle(self._events_per_batch))
                | "Commit" >> beam.ParDo(_ApplyFn(self._config)).with_outputs(DLQ, main=COMMITTED))
