"""Property: any mix of PayNow deliveries over a few orders and subscriptions, in any order, with duplicates,
re-sends, two uid resolutions and a catalog change, ends in the wallets and keys of the independent model
(ops/load/ledger_model.py): (a) through the pure rules and an in-memory store, (b) through the real Firestore sink."""
from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.cloud import firestore
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ops.load.ledger_model import LedgerModel
from pipeline.accounts import resolve_uid
from pipeline.caches import ProductCatalog
from pipeline.firestore_transport import FirestoreConfig
from pipeline.ledger import (
    SUBSCRIPTION,
    OrderAggregate,
    Product,
    acts_on_order,
    decide,
    event_class,
    needs_uid,
    order_id,
    subscription_key,
)
from pipeline.model import Event
from pipeline.sink import LedgerWriter
from schemas import Envelope
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state

ONE_TIME = (f.P20, f.P50, f.P150, f.P500, f.LEGACY)
CUSTOMERS = {"c0": "ua", "c1": "ub", "c2": "uc"}
REFUND_STATUSES = ("created", "approved", "processing", "completed", "canceled", "failed")
Item = dict[str, Any] | tuple[str, str, int]
"""A delivery, or ("price", productId, points): the catalog changes at that point of the processing order."""


@st.composite
def histories(draw: st.DrawFn) -> list[Item]:
    """Deliveries of a few orders and subscriptions, shuffled, with exact duplicates and one catalog change."""
    items: list[Item] = []
    ids = itertools.count()

    def eid() -> str:
        return f"ev{next(ids)}"

    for o in range(draw(st.integers(1, 4))):
        oid = f"o{o}"
        lines: list[f.Line] = []
        for n in range(draw(st.integers(1, 3))):
            if draw(st.integers(0, 3)) == 0:
                lines.append((draw(st.sampled_from(f.SUBSCRIPTIONS)), 1, f"s{o}{n}"))
            else:
                lines.append((draw(st.sampled_from(ONE_TIME)), draw(st.integers(1, 3))))
        customer = draw(st.sampled_from(sorted(CUSTOMERS)))
        for copy in range(draw(st.integers(1, 3))):  # re-sends under new event ids, each resolving its own way
            uid = draw(st.sampled_from([None, "ux", CUSTOMERS[customer]])) if copy else draw(
                st.sampled_from([None, "ux"]))
            items.append(f.order(eid(), oid, lines, customer=customer, uid=uid))
        for status in draw(st.lists(st.sampled_from(("completed", *REFUND_STATUSES)), max_size=2)):
            items.append(f.refund(eid(), oid, status, customer=draw(st.sampled_from([None, customer]))))
        for _ in range(draw(st.integers(0, 2))):
            items.append(f.chargeback(eid(), oid))
        for closing in draw(st.lists(st.sampled_from(("won", "lost")), max_size=2)):
            items.append(f.chargeback(eid(), oid, closing, closed=True))
    for s in range(draw(st.integers(0, 2))):
        product = draw(st.sampled_from(f.SUBSCRIPTIONS))
        customer = draw(st.sampled_from(sorted(CUSTOMERS)))
        for cycle in draw(st.lists(st.integers(1, 3), min_size=1, max_size=4)):  # a repeated cycle: a re-send
            uid = draw(st.sampled_from([None, "uy"]))
            items.append(f.cycle(eid(), f"sub{s}", product, cycle, customer=customer, uid=uid))
    for _ in range(draw(st.integers(0, 2))):
        items.append(f.no_effect(draw(st.sampled_from(("ON_PAYMENT_COMPLETED", "ON_DELIVERY_ITEM_ADDED",
                                                        "ON_SUBSCRIPTION_CANCELED"))), eid(), customer_id="c0"))
    shuffled: list[Item] = draw(st.permutations(items))
    for dup in draw(st.lists(st.sampled_from(items), max_size=4)):
        shuffled.insert(draw(st.integers(0, len(shuffled))), dup)
    used = sorted({line[0] for item in items if isinstance(item, dict) for line in _products(item)})
    for product in draw(st.lists(st.sampled_from(used), max_size=2)) if used else ():
        change: Item = ("price", product, draw(st.integers(0, 900)))
        shuffled.insert(draw(st.integers(0, len(shuffled))), change)
    return shuffled


def _products(delivery: dict[str, Any]) -> list[tuple[str]]:
    body = delivery["body"]
    if delivery["event_type"] == "ON_ORDER_COMPLETED":
        return [(line["product_id"],) for line in body["lines"]]
    return [(body["product_id"],)] if delivery["event_type"].startswith("ON_SUBSCRIPTION_") else []


def describe(history: list[Item]) -> str:
    """One short line per item, for the counterexample hypothesis prints."""
    out = []
    for item in history:
        if isinstance(item, tuple):
            out.append(f"catalog: {item[1]} -> {item[2]} points")
            continue
        body, kind = item["body"], item["event_type"].removeprefix("ON_")
        uid = ((body.get("checkout") or {}).get("metadata") or {}).get("uid")
        who = f" customer={(body.get('customer') or {}).get('id')} metadata.uid={uid}"
        if kind == "ORDER_COMPLETED":
            lines = ", ".join(f"{x['product_id']}x{x['quantity']}" + (f"(sub {x['subscription_id']})"
                                                                      if x.get("subscription_id") else "")
                              for x in body["lines"])
            out.append(f"{item['event_id']} ORDER {body['id']} [{lines}]{who}")
        elif kind in ("REFUND", "CHARGEBACK", "CHARGEBACK_CLOSED"):
            status = body.get("status") if kind == "REFUND" else body.get("chargeback_status")
            out.append(f"{item['event_id']} {kind} {body['order_id']} {status}")
        elif kind.startswith("SUBSCRIPTION_"):
            out.append(f"{item['event_id']} {kind} {body['id']} cycle {body['billing_cycle_sequence']} "
                       f"{body['product_id']}{who}")
        else:
            out.append(f"{item['event_id']} {kind}")
    return "\n".join(out)


def catalog() -> dict[str, Product]:
    return {pid: Product(points, "subscription" if pid in f.SUBSCRIPTIONS else "one_time")
            for pid, points in f.POINTS.items()}


def model_of(history: list[Item]) -> LedgerModel:
    model = LedgerModel(f.POINTS, CUSTOMERS)
    for item in history:
        if isinstance(item, tuple):
            model.set_points(item[1], item[2])
        else:
            model.add(item)
    assert model.unmapped() == {}
    return model


def to_event(delivery: dict[str, Any]) -> Event:
    """The event ResolveAccount would hand on (every customer here is resolvable)."""
    env = f.envelope(delivery)
    uid = resolve_uid(env["data"].get("customer") or {}, CUSTOMERS.get) if needs_uid(env) else None
    assert uid or not needs_uid(env)
    return Event(f.message(delivery), env, uid)


def expected_keys(model: LedgerModel, found: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """The model's keys plus a reinstatement/void pair where the ledger has one (the model allows either)."""
    keys = dict(model.keys())
    for key, value in found.items():
        if key.startswith("reinstatement-void:"):
            pair = "reinstatement:" + key.split(":", 1)[1]
            if pair in found:
                keys[key], keys[pair] = value, found[pair]
    return keys


def nonzero(wallets: dict[str, int]) -> dict[str, int]:
    return {uid: amount for uid, amount in wallets.items() if amount}


@dataclass
class MemoryLedger:
    """The sink's commit semantics in memory: event docs, order aggregates, global key claims, wallets."""

    products: dict[str, Product]
    events: set[str] = field(default_factory=set)
    orders: dict[str, OrderAggregate] = field(default_factory=dict)
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)
    wallets: dict[str, int] = field(default_factory=dict)

    def apply(self, env: Envelope, uid: str | None) -> str:
        if env["eventId"] in self.events:
            return "duplicate"
        cls = event_class(env)
        oid = order_id(env) if acts_on_order(env, cls) else None
        decision = decide(env, self.products, uid, self.orders.get(oid) if oid else None)
        if cls == SUBSCRIPTION and subscription_key(env) in self.keys:
            decision = decision.as_duplicate()
        for key, entry in decision.entries.items():
            assert key not in self.keys, f"{key} credited twice"
            assert decision.uid is not None
            self.keys[key] = (decision.uid, entry["amount"])
            self.wallets[decision.uid] = self.wallets.get(decision.uid, 0) + entry["amount"]
        if oid and decision.aggregate is not None:
            self.orders[oid] = decision.aggregate
        self.events.add(env["eventId"])
        return decision.status


@settings(max_examples=200, deadline=None)
@given(history=histories())
def test_pure_rules_in_memory_end_at_the_model(history: list[Item]) -> None:
    note(describe(history))
    memory = MemoryLedger(catalog())
    for item in history:
        if isinstance(item, tuple):
            memory.products[item[1]] = Product(item[2])
        else:
            event = to_event(item)
            memory.apply(event.envelope, event.uid)
    model = model_of(history)
    assert memory.keys == expected_keys(model, memory.keys)
    assert nonzero(memory.wallets) == nonzero(model.wallets())


@pytest.fixture(scope="module")
def emulator(emulator_hosts: tuple[str, str]) -> Iterator[None]:
    yield None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(history=histories(), data=st.data())
def test_the_firestore_sink_ends_at_the_model(emulator: None, history: list[Item], data: st.DataObject) -> None:
    """The same histories through LedgerWriter on the emulator, in random batches (a catalog change between
    batches), each example in a project of its own."""
    note(describe(history))
    project = f"prop-{uuid.uuid4().hex[:10]}"
    db = firestore.Client(project=project)
    products = catalog()
    writer = LedgerWriter(db, FirestoreConfig(project, region="us-central1"),
                          catalog=ProductCatalog(lambda: dict(products), refresh_seconds=0), sleep=lambda _: None)
    try:
        batch: list[Event] = []
        for item in [*history, ("flush", "", 0)]:
            if isinstance(item, tuple) or data.draw(st.integers(0, 3)) == 0:
                statuses = [r.status for r in writer.apply(batch)]
                assert not {"write_failed", "unmapped_product", "drop_malformed"} & set(statuses), statuses
                batch = []
            if isinstance(item, tuple):
                if item[0] == "price":
                    products[item[1]] = Product(item[2])
            else:
                batch.append(to_event(item))
        state = read_state(db)
    finally:
        writer.close()
        db.close()
    check_invariants(state)
    model = model_of(history)
    found = state.claimed()
    assert found == expected_keys(model, found)
    assert nonzero(state.wallets) == nonzero(model.wallets())
