"""`paynow simulate`: a deterministic simulation of months of PayNow traffic through the real pipeline code.

One seed is one world (ops/load/sim_world.py: a virtual clock, in-memory Pub/Sub and Firestore): PayNow deliveries
built by the delivery factory go through the ingress's own mapping (`envelope_from_payload`, `encode_envelope`,
`ordering_key`) onto the topic; two or more workers run the pipeline's own steps on what they pull (the decode gate,
the acking read's dedupe claims, ResolveAccount's DoFn, ApplyToLedger's DoFn with its LedgerWriter - commit plan,
retries, conflicts, isolation, wedged keys - and PublishDeadLetters' DoFn with the durable record); an operator
replays dead letters with `ops.admin.dlq.replay` from the record; the dead-letter sweep resolves what committed.
Faults (FAULTS) are injected by seeded choices; a seeded scheduler interleaves the workers at every Firestore call.

Each run is judged by the independent model (ops/load/ledger_model.py) and the audit's invariants
(ops/admin/audit.py); a failing seed prints a short trace, and the same seed prints the same trace.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import apache_beam as beam
from google.api_core import exceptions as gexc

import pipeline.dead_letters as dead_letters_module
from ops.admin import audit as audit_module
from ops.admin import dlq as dlq_admin
from ops.load import sim_world as w
from ops.load.ledger_model import LedgerModel
from pipeline import accounts, sink
from pipeline.caches import CustomerCache, ProductCatalog
from pipeline.commit_plan import Create, Increment, Pending, Upsert, Write, commit_writes
from pipeline.dead_letters import resolutions
from pipeline.dedupe import IN_FLIGHT, dedupe_id
from pipeline.firestore_transport import FirestoreConfig, FirestoreRpc, FirestoreTransport
from pipeline.gate import decode_message
from pipeline.ledger import Product
from pipeline.local.dedupe import NEW, Claims
from pipeline.model import Event, Message, Rejected
from pipeline.observability import RegionMetrics
from schemas import MIN_COMPATIBLE, decode_dlq_record, deliveries, encode_envelope, ordering_key
from schemas import dead_letters as dl
from schemas.attributes import EVENT_ID
from schemas.paynow import envelope_attributes, envelope_from_payload

FAULTS: dict[str, str] = {
    "redelivery": "Pub/Sub redelivers acknowledged messages (lost acks) and messages past their ack deadline",
    "duplicate": "PayNow delivers the same event twice (same event id), minutes to days apart",
    "resend": "PayNow re-sends an order under a new event id, hours to 60 days later (past the 30-day TTL)",
    "reorder": "a customer's events published out of order (a refund or chargeback before its order)",
    "crash": "a worker crashes between its commit and its ack (restarts with an empty memory)",
    "transient": "Firestore UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ABORTED ... some after the commit landed",
    "permanent": "one event's write refused INVALID_ARGUMENT until an operator fixes it days later and replays",
    "conflict": "another writer changes an order aggregate between a worker's read and its commit",
    "dlq_publish": "DLQ publishes and dead-letter record writes fail",
    "retention": "Pub/Sub keeps an unacknowledged message 7 days (the pipeline's and the DLQ's subscriptions)",
    "ttl": "webhookEvents expire 30 days after their commit (Firestore TTL)",
    "late_chargeback": "chargebacks (and their closing) 60-120 days after the order",
    "late_mapping": "a customer's uid mapping appears days later (8 typically); the operator then replays",
    "price_change": "a product's points change while orders flow (the sink caches prices up to 60 s)",
    "hand_credit": "a purchase credited by hand outside the commit plan before its order arrives (a wedged key)",
    "reserved_uid": "checkout.metadata.uid is '__x__' (reserved by Firestore) or malformed",
}
ALWAYS = ("retention", "ttl")  # properties of the world, on in every seed unless --without
PRICE_BOUND_S = 60  # the sink's catalog cache (FirestoreConfig.product_refresh_seconds): a price is at most this old
MAX_DELIVERIES = 40  # a message delivered more often than this is wedged (a bounded-time detection must fire first)
TRANSIENT_ERRORS = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.Cancelled, gexc.Aborted,
                    gexc.ResourceExhausted, gexc.InternalServerError)
SWEEP_EVERY_MS = 12 * w.HOUR  # the pipeline sweeps every 5 minutes; twice a day is enough to judge it by the end
REGIONS = ("europe-west1", "us-central1")


_RPC_TAKES_THROTTLER = "throttler" in inspect.signature(FirestoreRpc).parameters
_PUBLISH_TAKES_CONFIG = "config" in inspect.signature(dead_letters_module._PublishFn).parameters


class _NoThrottle:
    def throttle_request(self, now_ms: float) -> bool:
        return False

    def successful_request(self, now_ms: float) -> None:
        pass


class _VirtualTime:
    """Stands in for the `time` module inside the pipeline modules that sleep or read the time themselves."""

    def __init__(self, clock: w.Clock) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock.seconds()

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(seconds)

    def monotonic(self) -> float:
        return self._clock.seconds()


# -- the scenario ----------------------------------------------------------------------------------------------------
@dataclass
class Planned:
    """One PayNow delivery the scenario sends at `at_ms` (virtual), and why."""

    at_ms: int
    delivery: dict[str, Any]
    note: str
    customer: str | None = None
    original: bool = True  # False for a duplicate (same event id) sent again


@dataclass
class Scenario:
    seed: int
    days: int
    faults: frozenset[str]
    customers: dict[str, str]  # customer id -> uid
    mapping_at: dict[str, int | None]  # customer id -> when its mapping appears (0: from the start; None: never)
    prices: list[tuple[int, str, int]]  # (at_ms, product, points), first ones at 0
    sends: list[Planned] = field(default_factory=list)
    permanent: dict[str, tuple[int, int]] = field(default_factory=dict)  # eventId -> (from_ms, fixed_ms)
    hand: dict[str, tuple[int, str, int]] = field(default_factory=dict)  # orderId -> (at_ms, uid, points)
    replays: list[int] = field(default_factory=list)  # when the operator replays open dead letters

    def price_at(self, product: str, at_ms: int) -> int:
        points = 0
        for when, pid, value in self.prices:
            if pid == product and when <= at_ms:
                points = value
        return points

    def catalog_at(self, at_ms: int) -> dict[str, int]:
        return {pid: self.price_at(pid, at_ms) for pid in sorted({p for _, p, _ in self.prices})}

    def mapped_at(self, customer: str | None, at_ms: int) -> bool:
        when = self.mapping_at.get(customer or "")
        return when is not None and when <= at_ms


def _choose_faults(rng: random.Random, without: frozenset[str]) -> frozenset[str]:
    on = {f for f in FAULTS if f in ALWAYS or rng.random() < 0.5}
    return frozenset(on - without)


def build_scenario(seed: int, days: int, without: frozenset[str] = frozenset()) -> Scenario:
    """The deliveries, mappings, prices and operator actions of one seed."""
    rng = random.Random(f"scenario:{seed}")
    faults = _choose_faults(rng, without)
    tag = f"s{seed}"
    n_customers = rng.randint(2, 4)
    customers = {f"c{tag}x{i}": f"u{tag}x{i}" for i in range(n_customers)}
    mapping_at: dict[str, int | None] = {}
    for cid in customers:
        roll = rng.random()
        if "late_mapping" in faults and roll < 0.4:
            mapping_at[cid] = rng.choice([8 * w.DAY, rng.randint(1, 12) * w.DAY]) + rng.randint(0, w.DAY)
        elif roll > 0.93:
            mapping_at[cid] = None  # never mapped: its orders stay open dead letters
        else:
            mapping_at[cid] = 0
    products = [f"p{i}" for i in range(3)]
    prices = [(0, p, rng.choice([100, 250, 500, 1000])) for p in products]
    if "price_change" in faults:
        for _ in range(rng.randint(1, 2)):
            prices.append((rng.randint(0, 6 * w.DAY), rng.choice(products), rng.choice([120, 300, 750, 2000])))
        prices.sort(key=lambda x: x[0])
    sc = Scenario(seed, days, faults, customers, mapping_at, prices)
    horizon = (days - 4) * w.DAY
    ids = iter(range(1, 10_000))

    def eid() -> str:
        return f"evt{tag}n{next(ids)}"

    cids = list(customers)
    n_orders = rng.randint(3, 7)
    sale = rng.randint(0, 5 * w.DAY)  # a sale: orders within a second, so one pull and one commit carry several
    for k in range(n_orders):
        cid = rng.choice(cids)
        order = f"ord{tag}n{k}"
        at = rng.randint(0, 6 * w.DAY) if rng.random() < 0.7 else rng.randint(0, 20 * w.DAY)
        if rng.random() < 0.35:
            at = sale + rng.randint(0, 50)
        lines = [deliveries.order_line(f"l{order}{j}", rng.choice(products), rng.randint(1, 3))
                 for j in range(rng.randint(1, 2))]
        uid = None
        if "reserved_uid" in faults and rng.random() < 0.25:
            uid = rng.choice(["__x__", "__reserved__", "bad uid!"])
        elif rng.random() < 0.3:
            uid = customers[cid]  # the storefront's checkout.metadata.uid
        order_event = eid()
        delivery = deliveries.order_completed(order_event, order, cid, lines, uid=uid)
        sends = [Planned(at, delivery, f"order {order} of {cid}" + (f" uid={uid!r}" if uid else ""), cid)]
        if "hand_credit" in faults and rng.random() < 0.12:
            # an operator credits the purchase by hand (entry and wallet, no aggregate) before the order arrives
            hand_uid = uid if uid == customers[cid] else customers[cid]
            sc.hand[order] = (max(0, at - rng.randint(1, 3) * w.HOUR), hand_uid, 0)
        if "permanent" in faults and rng.random() < 0.2:
            sc.permanent[order_event] = (0, at + rng.randint(1, 10) * w.DAY)
        if "duplicate" in faults and rng.random() < 0.3:
            sends.append(Planned(at + rng.choice([rng.randint(1, 600) * w.SECOND, rng.randint(1, 40) * w.DAY]),
                                 delivery, f"duplicate of {order_event}", cid, original=False))
        if "resend" in faults and rng.random() < 0.3:
            again = deliveries.order_completed(eid(), order, cid, lines, uid=uid)
            sends.append(Planned(min(horizon, at + rng.choice([rng.randint(1, 48) * w.HOUR,
                                                               rng.randint(31, 60) * w.DAY])),
                                 again, f"re-send of {order} under a new id", cid))
        # what happens to the payment afterwards
        roll = rng.random()
        later = at + rng.randint(1, 72) * w.HOUR
        if "reorder" in faults and rng.random() < 0.3:
            later = at - rng.randint(1, 3600) * w.SECOND  # PayNow's reversal reaches us before the order
        with_customer = rng.random() < 0.5  # a null customer hashes the order id: another ordering key
        if roll < 0.2:
            status = rng.choice(["completed", "completed", "pending"])
            sends.append(Planned(later, deliveries.refund(eid(), f"rf{order}", order, status,
                                                          customer_id=cid if with_customer else None),
                                 f"refund ({status}) of {order}", cid))
        elif roll < 0.4:
            if "late_chargeback" in faults and rng.random() < 0.6:
                later = min(horizon - w.DAY, at + rng.randint(60, 120) * w.DAY)
            sends.append(Planned(later, deliveries.chargeback(eid(), f"pay{order}", order, "open",
                                                              customer_id=cid if with_customer else None),
                                 f"chargeback of {order}", cid))
            if rng.random() < 0.6:
                outcome = rng.choice(["won", "lost"])
                sends.append(Planned(later + rng.randint(1, 72) * w.HOUR,
                                     deliveries.chargeback(eid(), f"pay{order}", order, outcome, closed=True,
                                                           customer_id=cid if with_customer else None),
                                     f"chargeback closed ({outcome}) of {order}", cid))
                if outcome == "won" and rng.random() < 0.3:
                    sends.append(Planned(later + rng.randint(73, 200) * w.HOUR,
                                         deliveries.refund(eid(), f"rf{order}", order, "completed",
                                                           customer_id=cid if with_customer else None),
                                         f"refund after a won chargeback of {order}", cid))
        sc.sends.extend(sends)
    for k in range(rng.randint(0, 2)):
        cid = rng.choice(cids)
        at = rng.randint(0, 20 * w.DAY)
        for cycle in range(1, rng.randint(2, 3)):
            sc.sends.append(Planned(at + (cycle - 1) * 30 * w.DAY,
                                    deliveries.subscription_cycle(eid(), f"sub{tag}n{k}", rng.choice(products), cycle,
                                                                  cid, renewed=cycle > 1),
                                    f"subscription sub{tag}n{k} cycle {cycle}", cid))
    for _ in range(rng.randint(0, 1)):
        sc.sends.append(Planned(rng.randint(0, 10 * w.DAY), deliveries.no_effect("ON_DELIVERY_ITEM_ADDED", eid()),
                                "an event without ledger effect"))
    for planned in sc.sends:
        planned.at_ms = max(0, min(planned.at_ms, horizon))
    sc.sends.sort(key=lambda p: p.at_ms)
    fixes = sorted({t for t in sc.mapping_at.values() if t} | {fixed for _, fixed in sc.permanent.values()})
    sc.replays = [t + rng.randint(1, 12) * w.HOUR for t in fixes] + [(days - 3) * w.DAY]
    return sc


# -- the machinery the pipeline runs on -----------------------------------------------------------------------------
class SimTransport(FirestoreTransport):
    """The real transport's retries (FirestoreRpc, unthrottled) around the in-memory database."""

    def __init__(self, sim: Sim, region: str) -> None:
        self._sim = sim
        self._db = sim.db
        kwargs = {"throttler": _NoThrottle()} if _RPC_TAKES_THROTTLER else {}
        self._rpc = FirestoreRpc(region, 5, sim.clock.sleep, **kwargs)

    def get_all(self, paths: list[str]) -> dict[str, Any]:
        return self._rpc.call(lambda: self._db.get_all(paths))

    def products(self) -> dict[str, Product]:
        def load() -> dict[str, Product]:
            self._sim.maybe_fail("get", ["products"])
            return {s.id: Product.from_doc(s.to_dict() or {}) for s in self._db.collection("products")}
        return self._rpc.call(load)

    def commit(self, writes: Iterable[Write]) -> None:
        planned = list(writes)
        self._rpc.call(lambda: self._db.commit(planned))


class SimWriter(sink.LedgerWriter):
    """The real LedgerWriter on the virtual clock (its commit time is the clock's, not the wall's)."""

    clock: w.Clock

    def _commit(self, items: list[Pending]) -> None:
        self._store.commit(commit_writes(items, worker_region=self._config.region, now=self.clock.datetime(),
                                         event_ttl_days=self._config.event_ttl_days))


class SimPublisher:
    """The DLQ topic as `_PublishFn` publishes to it (a future whose result may fail)."""

    def __init__(self, sim: Sim) -> None:
        self._sim = sim

    def publish(self, topic: str, data: bytes, **attributes: str) -> _Future:
        if "dlq_publish" in self._sim.sc.faults and self._sim.rng.random() < 0.15:
            return _Future(gexc.ServiceUnavailable("DLQ publish failed (injected)"))
        message = self._sim.dlq.publish(data, attributes)
        self._sim.dead_lettered(attributes, message)
        return _Future(None)


@dataclass
class _Future:
    error: Exception | None

    def result(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class RecordStore:
    """`ops.admin.dlq.Store` over the in-memory database (what `paynow dlq` reads and changes)."""

    def __init__(self, db: w.Firestore) -> None:
        self._db = db

    def letters(self, states: Iterable[str]) -> list[Any]:
        wanted = set(states)
        return [dlq_admin.Letter(s.id, s.to_dict() or {}) for s in self._db.collection(dl.COLLECTION)
                if (s.to_dict() or {}).get(dl.STATE, dl.OPEN) in wanted]

    def get(self, letter_id: str) -> Any:
        snap = self._db.get(f"{dl.COLLECTION}/{letter_id}")
        return dlq_admin.Letter(snap.id, snap.to_dict() or {}) if snap.exists else None

    def update(self, letter_id: str, fields: dict[str, Any], increments: dict[str, int] | None = None) -> None:
        self._db._apply([Upsert(f"{dl.COLLECTION}/{letter_id}", fields, increments or {})])


class Worker:
    """One pipeline worker process: the real steps' DoFns, set up on the stand-ins."""

    def __init__(self, sim: Sim, name: str, region: str) -> None:
        self.sim = sim
        self.name = name
        self.region = region
        self.idle = False
        self.busy = False
        self.restarts = 0
        self.start()

    def start(self) -> None:
        sim = self.sim
        config = FirestoreConfig(project="sim", region=self.region, release_transient=True)
        self.claims = Claims(3600.0, clock=sim.clock.seconds)
        self.transport = SimTransport(sim, self.region)
        resolve = accounts._ResolveFn(config)
        resolve._client = w.Client(sim.db)  # type: ignore[assignment]
        resolve._rpc = self.transport._rpc
        resolve._customers = CustomerCache(resolve._lookup, config.product_refresh_seconds, clock=sim.clock.seconds)
        self.resolve = resolve
        catalog = ProductCatalog(self.transport.products, config.product_refresh_seconds, clock=sim.clock.seconds)
        writer = SimWriter(None, config, catalog=catalog, sleep=sim.clock.sleep, threads=1)  # type: ignore[arg-type]
        writer.clock = sim.clock
        writer._store = self.transport
        apply_fn = sink._ApplyFn(config)
        apply_fn._writer = writer
        apply_fn._metrics = RegionMetrics(self.region)
        self.apply = apply_fn
        if _PUBLISH_TAKES_CONFIG:
            publish = dead_letters_module._PublishFn("dlq", config, self._release_messages, scan=False)
            publish._client = None  # type: ignore[assignment]
            publish._commit = self._record_commit
        else:  # pragma: no cover - the code before issue 19
            publish = dead_letters_module._PublishFn("dlq", self.region, self._release_messages)  # type: ignore
        publish._publisher = SimPublisher(sim)
        publish._metrics = RegionMetrics(self.region)
        self.publish = publish
        self._released: list[Message] = []

    def _record_commit(self, writes: list[Write]) -> None:
        if "dlq_publish" in self.sim.sc.faults and self.sim.rng.random() < 0.1:
            raise gexc.ServiceUnavailable("dead-letter record write failed (injected)")
        self.transport.commit(writes)

    def _release_messages(self, messages: list[Message]) -> None:
        self._released.extend(messages)

    # -- one step: pull a batch and run it through the pipeline's steps
    def step(self) -> int:
        sim = self.sim
        pulled = sim.sub.pull(sim.batch_size)
        if not pulled:
            return 0
        self.busy = True
        try:
            self._process(pulled)
        finally:
            self.busy = False
        return len(pulled)

    def _process(self, pulled: list[w.SimMessage]) -> None:
        sim = self.sim
        by_ack: dict[str, w.SimMessage] = {m.ack_id: m for m in pulled}
        ack: list[Message] = []
        release: list[Message] = []
        rejected: list[Rejected] = []
        events: list[Event] = []
        for m in pulled:
            message = Message(m.data, dict(m.attributes), m.publish_ms, m.message_id, m.ordering_key, m.ack_id)
            decoded = decode_message(message, MIN_COMPATIBLE)
            if isinstance(decoded, Rejected):
                rejected.append(decoded)
                continue
            key = dedupe_id(decoded)
            verdict = self.claims.claim(key)
            if verdict == IN_FLIGHT:
                release.append(message)
                continue
            if verdict != NEW:
                ack.append(message)  # settled: a duplicate dropped
                continue
            event = dataclasses.replace(decoded, message=dataclasses.replace(message, claim=key))
            for out in self.resolve.process(event):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    (rejected if out.tag == accounts.DLQ else release).append(out.value)
                else:
                    events.append(out)
        if events:
            for out in self.apply.process(events):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    (rejected if out.tag == sink.DLQ else release).append(out.value)
                else:
                    ack.append(out)
        if rejected:
            self._released = []
            acked = list(self.publish.process(rejected))
            ack.extend(acked)
            release.extend(self._released)
        if sim.trace.keep:
            ids = ", ".join(f"{m.attributes.get(EVENT_ID)}#{by_ack[str(m.ack_id)].deliveries}" for m in ack)
            again = ", ".join(f"{m.attributes.get(EVENT_ID)}" for m in release)
            sim.trace(f"{self.name} pulled {len(pulled)}: acks {ids or '-'}" + (f"; releases {again}" if again else ""))
        if "crash" in sim.sc.faults and sim.rng.random() < 0.04:
            sim.trace(f"{self.name} crashed before acking {len(ack)} and releasing {len(release)} "
                      f"({', '.join(str(m.attributes.get(EVENT_ID)) for m in ack[:4])})")
            self.restarts += 1
            self.start()
            return
        for message in ack:
            if message.claim:
                self.claims.settle([message.claim])
            original = by_ack[str(message.ack_id)]
            sim.sub.ack(original, str(message.ack_id))
            if "redelivery" in sim.sc.faults and sim.rng.random() < 0.05:
                sim.scheduler.at(sim.clock.now_ms + sim.rng.randint(1, 600) * w.SECOND, "redeliver",
                                 partial(sim.redeliver, original))
        for message in release:
            if message.claim:
                self.claims.forget([message.claim])
            sim.sub.nack(by_ack[str(message.ack_id)], str(message.ack_id))


# -- the simulation --------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    seed: int
    ok: bool
    problems: list[str]
    trace: list[str]
    faults: frozenset[str]
    stats: dict[str, int]

    def report(self, lines: int = 40) -> str:
        head = f"seed {self.seed}: {'ok' if self.ok else 'FAILED'} (faults: {', '.join(sorted(self.faults))})"
        if self.ok:
            return head
        shown = self.trace[-lines:] if len(self.trace) > lines else self.trace
        return "\n".join([head, *(f"  problem: {p}" for p in self.problems[:8]), "  trace (last lines):",
                          *(f"    {t}" for t in shown)])


class Sim:
    def __init__(self, seed: int, *, days: int = 130, processes: int = 2, without: frozenset[str] = frozenset(),
                 trace: bool = True, scenario: Scenario | None = None) -> None:
        self.seed = seed
        self.sc = scenario or build_scenario(seed, days, without)
        self.rng = random.Random(f"world:{seed}")
        self.clock = w.Clock()
        self.trace = w.Trace(self.clock, trace)
        self.db = w.Firestore(self.clock, self.trace)
        self.db.before = self._before
        self.db.after_commit = self._after_commit
        self.scheduler = w.Scheduler(self.clock)
        self.topic = w.Topic("envelopes", self.clock)
        retention = 7 * w.DAY if "retention" in self.sc.faults else 10_000 * w.DAY
        self.sub = w.Subscription("pipeline", self.clock, self.trace, retention_ms=retention)
        self.sub.park_after = MAX_DELIVERIES + 1  # a wedged message is judged, not redelivered for months
        self.topic.subscriptions.append(self.sub)
        self.dlq = w.Topic("dlq", self.clock)
        self.dlq_sub = w.Subscription("dlq-inspect", self.clock, self.trace, retention_ms=retention)
        self.dlq.subscriptions.append(self.dlq_sub)
        self.batch_size = 12
        self.workers = [Worker(self, f"w{i}", REGIONS[i % 2]) for i in range(processes)]
        self.depth = 0
        self._sweep_due = False
        self.end_ms = self.clock.start_ms + self.sc.days * w.DAY
        self.letters: list[tuple[int, str, str, str]] = []  # (at, eventId, verdict, reason) of every dead-lettering
        self.accepted: dict[str, Planned] = {}
        self.hand_docs: set[str] = set()
        self.hand_amounts: dict[str, int] = {}
        self.stats = {"published": 0, "steps": 0, "replayed": 0, "swept": 0, "ttl_deleted": 0}
        self._permanent_paths = {f"webhookEvents/{e}": span for e, span in self.sc.permanent.items()}

    # -- faults at each Firestore call, and the interleaving of workers
    def maybe_fail(self, kind: str, paths: list[str]) -> None:
        if "transient" in self.sc.faults and self.rng.random() < 0.015:
            error = self.rng.choice(TRANSIENT_ERRORS)
            raise error(f"{kind} failed (injected)")

    def _before(self, kind: str, paths: list[str]) -> None:
        self.maybe_fail(kind, paths)
        if kind == "commit":
            for p in paths:
                span = self._permanent_paths.get(p)
                if span is not None and span[0] <= self.clock.now_ms - self.clock.start_ms < span[1]:
                    raise gexc.InvalidArgument(f"write of {p} refused (injected permanent fault)")
        if self.depth == 0 and len(self.workers) > 1 and self.rng.random() < 0.25:
            free = [x for x in self.workers if not x.busy]
            other = self.rng.choice(free) if free else None
            if other is not None:
                self.depth += 1
                try:
                    if other.step():
                        self.stats["steps"] += 1
                finally:
                    self.depth -= 1
        if kind == "get" and "conflict" in self.sc.faults and self.rng.random() < 0.1:
            for p in paths:
                if p.startswith("orders/"):
                    self.db.touch(p)  # after this read, before its commit: the commit's precondition fails

    def _after_commit(self, kind: str, paths: list[str]) -> None:
        if "transient" in self.sc.faults and self.rng.random() < 0.02:
            raise gexc.DeadlineExceeded("commit reply lost (injected; the commit landed)")

    def redeliver(self, message: w.SimMessage) -> None:
        self.sub.redeliver(message)
        self.trace(f"Pub/Sub redelivers {message.attributes.get(EVENT_ID)} (an acknowledgement was lost)")
        self._wake()

    def dead_lettered(self, attributes: dict[str, str], message: w.SimMessage) -> None:
        event_id = attributes.get(EVENT_ID, "?")
        verdict = attributes.get("verdict", "?")
        try:
            reason = str(decode_dlq_record(message.data).get("reason", ""))[:120]
        except Exception as exc:  # only for the trace
            reason = f"undecodable: {exc!r}"[:120]
        self.letters.append((self.clock.now_ms, event_id, verdict, reason))
        self._schedule_sweep()
        self.trace(f"dead-lettered {event_id}: {verdict} ({reason})")

    # -- the world's actors
    def _send(self, planned: Planned) -> None:
        raw = deliveries.encode(planned.delivery)
        envelope = envelope_from_payload(raw, timestamp_ms=self.clock.now_ms, region=REGIONS[self.rng.randint(0, 1)])
        data = encode_envelope(envelope)
        self.topic.publish(data, envelope_attributes(envelope), ordering_key(envelope))
        if planned.original:
            self.accepted.setdefault(str(planned.delivery["event_id"]), planned)
        self.stats["published"] += 1
        self.trace(f"PayNow -> {planned.delivery['event_type']} {planned.delivery['event_id']}: {planned.note}")
        self._wake()

    def _wake(self) -> None:
        for worker in self.workers:
            if worker.idle:
                worker.idle = False
                self.scheduler.at(self.clock.now_ms + self.rng.randint(5, 200), f"poll {worker.name}",
                                  partial(self._poll, worker))

    def _poll(self, worker: Worker) -> None:
        if worker.step():
            self.stats["steps"] += 1
            self.scheduler.at(self.clock.now_ms + self.rng.randint(20, 400), f"poll {worker.name}",
                              partial(self._poll, worker))
            return
        nxt = self.sub.next_available_ms()
        if nxt is None:
            worker.idle = True
            return
        self.scheduler.at(max(nxt, self.clock.now_ms + 50), f"poll {worker.name}", partial(self._poll, worker))

    def _set_mapping(self, customer: str) -> None:
        self.db._apply([Create(f"paynowCustomers/{customer}", {"uid": self.sc.customers[customer]})])
        self.trace(f"mapping {customer} -> {self.sc.customers[customer]} appears")

    def _set_price(self, product: str, points: int) -> None:
        self.db._apply([Upsert(f"products/{product}", {"points": points, "kind": "one_time", "active": True})])
        self.trace(f"price of {product} is now {points} points")

    def _hand_credit(self, order: str) -> None:
        _, uid, _ = self.sc.hand[order]
        planned = next(p for p in self.sc.sends if p.delivery["event_type"] == "ON_ORDER_COMPLETED"
                       and p.delivery["body"]["id"] == order)
        points = sum(self.sc.price_at(line["product_id"], self.clock.now_ms) * int(line["quantity"])
                     for line in planned.delivery["body"]["lines"])
        key = f"purchase:{order}"
        path = f"users/{uid}/ledger/{key}"
        self.db._apply([Create(path, {"amount": points, "kind": "purchase", "source": "manual",
                                      "eventId": f"hand-{order}", "orderId": order}, ("createdAt",)),
                        Increment(f"users/{uid}/wallet/points", {"paidBalance": points})])
        self.hand_docs.add(path)
        self.hand_amounts[uid] = self.hand_amounts.get(uid, 0) + points
        self.trace(f"operator credits {key} to {uid} by hand ({points} points, outside the commit plan)")

    def _daily(self) -> None:
        if "ttl" in self.sc.faults:
            gone = self.db.ttl_sweep(self.rng)
            self.stats["ttl_deleted"] += len(gone)
            if gone:
                self.trace(f"TTL deleted {len(gone)} webhookEvents ({', '.join(p.split('/')[1] for p in gone[:3])})")
        self.dlq_sub._expire()
        self.sub._expire()
        if self.clock.now_ms + w.DAY < self.end_ms:
            self.scheduler.at(self.clock.now_ms + w.DAY, "daily", self._daily)

    def _sweep(self) -> None:
        """The dead-letter sweep (pipeline.dead_letters.sweep_unresolved's choice and writes, on the stand-in)."""
        letters = [s for s in self.db.collection(dl.COLLECTION)
                   if (s.to_dict() or {}).get(dl.STATE) in dl.UNRESOLVED
                   and (s.to_dict() or {}).get(dl.EVENT_ID) == s.id]
        letters.sort(key=lambda s: (s.get(dl.FIRST_FAILED_AT) or 0, s.id))
        ids = {s.id: s.id for s in letters[:dead_letters_module.SWEEP_LIMIT]}
        try:
            if not ids:
                raise LookupError("nothing to sweep")
            snaps = self.workers[0].transport.get_all([f"webhookEvents/{e}" for e in ids.values()])
            committed = {s.id: str((s.to_dict() or {}).get("status", "")) for s in snaps.values() if s.exists}
            writes = resolutions(ids, committed, "sweep", self.clock.now_ms)
            if writes:
                self.workers[0].transport.commit(writes)
                self.stats["swept"] += len(writes)
                self.trace(f"sweep resolved {len(writes)} dead letters")
        except Exception as exc:
            self.trace(f"sweep failed: {type(exc).__name__}")
        self._sweep_due = False
        if any(s.get(dl.STATE) in dl.UNRESOLVED for s in self.db.collection(dl.COLLECTION)):
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        """The sweep runs every SWEEP_EVERY_MS while unresolved letters exist (an idle world skips the empty scans)."""
        if not self._sweep_due and self.clock.now_ms + SWEEP_EVERY_MS < self.end_ms:
            self._sweep_due = True
            self.scheduler.at(self.clock.now_ms + SWEEP_EVERY_MS, "sweep", self._sweep)

    def _replay(self) -> None:
        """The operator replays every unresolved dead letter (`paynow dlq replay`)."""
        def publish(data: bytes, attributes: dict[str, str], key: str) -> str:
            return self.topic.publish(data, attributes, key).message_id

        result = dlq_admin.replay(RecordStore(self.db), publish, dlq_admin.Filter(), now_ms=self.clock.now_ms)
        replayed = [x.event_id for x in result.replayed]
        self.stats["replayed"] += len(replayed)
        self.trace(f"operator replays {len(replayed)} dead letters: {', '.join(replayed[:6])}")
        self._wake()

    # -- running and judging
    def run(self) -> Outcome:
        sc = self.sc
        self.end_ms = self.clock.start_ms + sc.days * w.DAY
        start = self.clock.start_ms
        for at, product, points in sc.prices:
            self.scheduler.at(start + at, "price", partial(self._set_price, product, points))
        for customer, appears in sc.mapping_at.items():
            if appears is not None:
                self.scheduler.at(start + appears, "mapping", partial(self._set_mapping, customer))
        for order, (at, _, _) in sc.hand.items():
            self.scheduler.at(start + at + 1, "hand", partial(self._hand_credit, order))
        for planned in sc.sends:
            self.scheduler.at(start + planned.at_ms + 2, "send", partial(self._send, planned))
        for at in sc.replays:
            self.scheduler.at(start + at, "replay", self._replay)
        self.scheduler.at(start + w.HOUR, "daily", self._daily)
        for worker in self.workers:
            worker.idle = True
        while len(self.scheduler) and (self.scheduler.next_ms() or 0) <= self.end_ms:
            self.scheduler.run_next()
        self.clock.now_ms = max(self.clock.now_ms, self.end_ms)
        problems = self.judge()
        return Outcome(self.seed, not problems, problems, self.trace.lines, sc.faults, dict(self.stats))

    def open_letters(self) -> dict[str, str]:
        """eventId -> verdict of every dead letter an operator can see and replay now."""
        # what `paynow dlq list --state open --state replayed` shows
        shown = dlq_admin.select(RecordStore(self.db), dlq_admin.Filter(states=frozenset(dl.UNRESOLVED)),
                                 now_ms=self.clock.now_ms)
        return {x.event_id: x.verdict for x in shown}

    def _justified(self, at_ms: int, event_id: str, verdict: str, *, final: bool) -> bool:
        """Whether an event may be dead-lettered with `verdict` at `at_ms` (final: still open at the end)."""
        planned = self.accepted.get(event_id)
        if planned is None:
            return False
        rel = at_ms - self.clock.start_ms
        body = planned.delivery["body"]
        if verdict == "unmapped_customer":
            # the worker's customer cache may answer from up to a minute before
            return not self.sc.mapped_at(planned.customer, rel - PRICE_BOUND_S * 1000) or (not final and \
                not self.sc.mapped_at(planned.customer, rel - 2 * PRICE_BOUND_S * 1000))
        if verdict == "write_failed":
            span = self.sc.permanent.get(event_id)
            return not final and span is not None and span[0] <= rel < span[1] + w.MINUTE
        if verdict == "wedged_key":
            return planned.delivery["event_type"] == "ON_ORDER_COMPLETED" and body.get("id") in self.sc.hand
        return False

    def judge(self) -> list[str]:
        problems: list[str] = []
        # 1. no dead letter without a cause: one event's fault never sinks another
        for at, event_id, verdict, reason in self.letters:
            if not self._justified(at, event_id, verdict, final=False):
                problems.append(f"{event_id} dead-lettered {verdict} at {self.clock.stamp(at)} without a cause of "
                                f"its own ({reason})")
        # 2. every accepted payment is credited (its event committed) or an open, visible dead letter
        open_now = self.open_letters()
        for event_id, planned in self.accepted.items():
            if event_id in self.db.ever_events:
                continue
            if event_id not in open_now:
                problems.append(f"{event_id} lost: never committed and no open dead letter ({planned.note})")
            elif not self._justified(self.clock.now_ms, event_id, open_now[event_id], final=True):
                problems.append(f"{event_id} still an open {open_now[event_id]} dead letter after its cause was "
                                f"fixed and replayed ({planned.note})")
        for event_id in sorted(open_now):
            if event_id in self.db.ever_events:
                problems.append(f"{event_id} committed but its dead letter is still open after the sweeps")
        # 3. no key wedged forever: everything settled, nothing delivered without end
        for message in self.sub.expired:
            problems.append(f"{message.attributes.get(EVENT_ID)} expired unacked in the pipeline's subscription "
                            f"after {message.deliveries} deliveries")
        for message in self.sub.messages.values():
            problems.append(f"{message.attributes.get(EVENT_ID)} never settled ({message.deliveries} deliveries)")
        for message_id, count in self.sub.max_deliveries.items():
            if count > MAX_DELIVERIES:
                problems.append(f"message {message_id} delivered {count} times (a wedged key)")
        # 4. the audit's invariants, and the independent model
        snapshot = self.snapshot()
        report = audit_module.audit(snapshot, now_ms=self.clock.now_ms)
        for check in report.checks:
            if not check.ok:
                problems.append(f"audit: {check.name}: {check.value} {check.detail}")
        problems.extend(self._against_model(snapshot, open_now))
        return problems

    def snapshot(self) -> audit_module.Snapshot:
        """The ledger as the audit reads it, without what was written by hand outside the commit plan."""
        wallets: dict[str, int] = {}
        ledger: dict[tuple[str, str], dict[str, Any]] = {}
        for path, (fields, _, _) in self.db.docs.items():
            parts = path.split("/")
            if parts[0] != "users" or len(parts) != 4:
                continue
            if parts[2] == "wallet" and parts[3] == "points":
                wallets[parts[1]] = int(fields.get("paidBalance", 0)) - self.hand_amounts.get(parts[1], 0)
            elif parts[2] == "ledger" and path not in self.hand_docs:
                ledger[(parts[1], parts[3])] = fields
        return audit_module.Snapshot(
            wallets, ledger,
            {s.id: s.to_dict() or {} for s in self.db.collection("webhookEvents")},
            {s.id: s.to_dict() or {} for s in self.db.collection("ledgerKeys")},
            {s.id: s.to_dict() or {} for s in self.db.collection("orders")})

    def _against_model(self, snapshot: audit_module.Snapshot, open_now: dict[str, str]) -> list[str]:
        sc = self.sc
        model = LedgerModel(sc.catalog_at(0), {c: u for c, u in sc.customers.items() if sc.mapping_at[c] is not None})
        changes = [(at, p, v) for at, p, v in sc.prices if at > 0]
        for planned in sorted(self.accepted.values(), key=lambda p: p.at_ms):
            while changes and changes[0][0] <= planned.at_ms:
                model.set_points(changes[0][1], changes[0][2])
                changes.pop(0)
            event_id = str(planned.delivery["event_id"])
            if event_id in open_now and event_id not in self.db.ever_events:
                continue  # an open dead letter (judged above)
            model.add(planned.delivery)
        want = model.keys()
        actual = {key: (uid, int(e.get("amount", 0))) for (uid, key), e in snapshot.ledger.items()}
        for key in [k for k in actual if k.startswith("reinstatement-void:")]:
            pair = "reinstatement:" + key.split(":", 1)[1]
            if pair in actual and pair not in want and actual[pair][1] + actual[key][1] == 0:
                del actual[pair], actual[key]
        problems = []
        for key in sorted(set(want) | set(actual)):
            if key not in actual:
                problems.append(f"model: {want[key][0]}/{key} ({want[key][1]}) missing from the ledger")
            elif key not in want:
                problems.append(f"model: {actual[key][0]}/{key} ({actual[key][1]}) in the ledger, nobody paid for it")
            elif actual[key] != want[key] and not self._priced_within_bound(key, actual[key], want[key], snapshot):
                problems.append(f"model: {key} is {actual[key]}, the model says {want[key]}")
        return problems

    def _priced_within_bound(self, key: str, got: tuple[str, int], want: tuple[str, int],
                             snapshot: audit_module.Snapshot) -> bool:
        """A purchase or cycle priced from a catalog up to PRICE_BOUND_S old when first credited is right (README:
        points are read when a credit unit is first credited, from a cache at most a minute old)."""
        if got[0] != want[0]:
            return False
        kind, _, rest = key.partition(":")
        if kind == "subscription":
            sub, _, cycle = rest.rpartition(":")
            entry = snapshot.ledger.get((got[0], key)) or {}
            lines = [(p.delivery["body"]["product_id"], 1) for p in self.accepted.values()
                     if p.delivery["event_type"] in ("ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED")
                     and p.delivery["body"]["id"] == sub and str(p.delivery["body"]["billing_cycle_sequence"]) == cycle]
        else:
            entry = snapshot.ledger.get((got[0], f"purchase:{rest}")) or {}
            body = next((p.delivery["body"] for p in self.accepted.values()
                         if p.delivery["event_type"] == "ON_ORDER_COMPLETED" and p.delivery["body"]["id"] == rest),
                        None)
            lines = [(x["product_id"], int(x["quantity"])) for x in (body or {}).get("lines", ())
                     if x.get("subscription_id") is None]
        credited = entry.get("createdAt")
        if not isinstance(credited, int) or not lines:
            return False
        rel = credited - self.clock.start_ms
        changed = [at for at, _, _ in self.sc.prices if rel - PRICE_BOUND_S * 1000 <= at <= rel]
        amounts = {sum(self.sc.price_at(pid, t) * qty for pid, qty in lines)
                   for t in [rel, *changed, *(at - 1 for at in changed)]}
        return abs(got[1]) in amounts


def run_seed(seed: int, *, days: int = 130, processes: int = 2, without: frozenset[str] = frozenset(),
             trace: bool = True, scenario: Scenario | None = None) -> Outcome:
    """One seed, start to judgement, on the virtual clock (the pipeline modules' time patched for the run)."""
    return run_sim(Sim(seed, days=days, processes=processes, without=without, trace=trace, scenario=scenario))


def run_sim(sim: Sim) -> Outcome:
    """Run a world to its judgement (kept for inspection by the caller)."""
    seed = sim.seed
    patched = _VirtualTime(sim.clock)
    saved = getattr(dead_letters_module, "time")  # noqa: B009 - the module's `time`, swapped for the run
    setattr(dead_letters_module, "time", patched)  # noqa: B010
    random.seed(f"code:{seed}")  # the code's own jitter (backoff)
    try:
        return sim.run()
    finally:
        setattr(dead_letters_module, "time", saved)  # noqa: B010


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The pipeline's own log lines off for the runs (thousands of worlds), as they were afterwards: a run in the
    calling process (one worker process, the tests) must not leave the pipeline's logger silenced."""
    logger = logging.getLogger("pipeline")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _worker(args: tuple[list[int], int, int, frozenset[str]]) -> tuple[list[Outcome], float]:
    seeds, days, processes, without = args
    started = time.process_time()
    failed = []
    with _quiet():
        for seed in seeds:
            outcome = run_seed(seed, days=days, processes=processes, without=without, trace=False)
            if not outcome.ok:  # run again with its trace (deterministic: the same run)
                failed.append(run_seed(seed, days=days, processes=processes, without=without, trace=True))
    return failed, time.process_time() - started


@dataclass
class Summary:
    seeds: int
    failed: list[Outcome]
    wall_s: float
    cpu_s: float

    @property
    def seeds_per_s(self) -> float:
        return self.seeds / self.wall_s if self.wall_s else 0.0


def run_many(seeds: Sequence[int], *, days: int = 130, processes: int = 2, without: frozenset[str] = frozenset(),
             jobs: int | None = None) -> Summary:
    """Run `seeds` (over `jobs` OS processes; 1: in this one); the failing ones with their traces."""
    jobs = jobs if jobs is not None else min(os.cpu_count() or 1, 2)
    started = time.monotonic()
    chunks = [list(seeds[i::jobs * 8]) for i in range(jobs * 8)] if jobs > 1 else [list(seeds)]
    work = [(c, days, processes, without) for c in chunks if c]
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_worker, work)
    else:
        results = [_worker(x) for x in work]
    failed = sorted((o for r, _ in results for o in r), key=lambda o: o.seed)
    return Summary(len(seeds), failed, time.monotonic() - started, sum(c for _, c in results))


def main(*, seeds: int, seed: int | None, days: int, processes: int, without: Sequence[str], show: bool,
         jobs: int | None = None, out: Callable[[str], None] = print) -> int:
    """The CLI: one seed (--seed, its trace with --show) or `seeds` seeds from 0; exit 1 if any failed."""
    unknown = sorted(set(without) - set(FAULTS))
    if unknown:
        out(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        return 2
    if days < 120:
        out("--days must be at least 120 (late chargebacks come 60-120 days after their order)")
        return 2
    if processes < 1 or seeds < 1:
        out("--processes and --seeds must be at least 1")
        return 2
    skip = frozenset(without)
    _quiet()
    if seed is not None:
        outcome = run_seed(seed, days=days, processes=processes, without=skip)
        out(outcome.report(lines=10_000 if show else 40))
        if show and outcome.ok:
            out("\n".join(f"    {t}" for t in outcome.trace))
        return 0 if outcome.ok else 1
    summary = run_many(range(seeds), days=days, processes=processes, without=skip, jobs=jobs)
    for outcome in summary.failed[:5]:
        out(outcome.report())
    out(f"{summary.seeds} seeds, {len(summary.failed)} failed, {summary.wall_s:.1f} s wall "
        f"({summary.seeds_per_s:.0f} seeds/s, {1000 * summary.cpu_s / summary.seeds:.1f} ms CPU a seed)"
        + (f"; failing seeds: {', '.join(str(o.seed) for o in summary.failed[:20])}" if summary.failed else ""))
    return 0 if not summary.failed else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(seeds=int(sys.argv[1]) if len(sys.argv) > 1 else 100, seed=None, days=130, processes=2,
                  without=(), show=False))
