"""Property: any permutation of a PayNow history, with duplicates, through the real pipeline and Firestore
emulator, ends in the state of applying that history once, in order; and paidBalance == sum(ledger.amount)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore, pubsub_v1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.bench_pipeline import PipelineProcess, publish_payloads, publisher, wait_until
from ops.catalog import seed_products
from ops.topology import Topology
from tests.pipeline import factories as f

USERS = ("a", "b", "c")
ONE_TIME = (f.P20, f.P50, f.P150, f.P500)
Fact = tuple[Any, ...]


@pytest.fixture(scope="module")
def running(emulator_hosts: tuple[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, firestore.Client,
                                                                        pubsub_v1.PublisherClient]]:
    """One pipeline for every example; each example uses ids of its own."""
    topo = Topology(project=f"prop-{uuid.uuid4().hex[:8]}")
    topo.create()
    db = firestore.Client(project=topo.project)
    seed_products(db)
    with PipelineProcess(topo, log_dir=Path(tmp_path_factory.mktemp("prop"))):
        yield topo, db, publisher()


@st.composite
def histories(draw: st.DrawFn) -> list[Fact]:
    facts: list[Fact] = []
    for i in range(draw(st.integers(1, 4))):
        user = draw(st.sampled_from(USERS))
        lines = draw(st.lists(st.tuples(st.sampled_from(ONE_TIME), st.integers(1, 3)), min_size=1, max_size=3))
        facts.append(("ON_ORDER_COMPLETED", i, user, lines, ""))
        for kind in ("ON_REFUND", "ON_CHARGEBACK", "ON_ORDER_COMPLETED"):  # the last: re-sent under a new id
            if draw(st.booleans()):
                facts.append((kind, i, user, lines, "again"))
    for j in range(draw(st.integers(0, 2))):
        user = draw(st.sampled_from(USERS))
        product = draw(st.sampled_from((f.BASIC_MONTHLY, f.PRO_MONTHLY)))
        for n, month in enumerate(draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))):
            kind = "ON_SUBSCRIPTION_ACTIVATED" if n == 0 else "ON_SUBSCRIPTION_RENEWED"
            facts.append((kind, j, user, product, f"2026-0{month}-01T00:00:00Z", n))
        if draw(st.booleans()):
            facts.append(("ON_SUBSCRIPTION_CANCELED", j, user, product, None, "x"))
    for k in range(draw(st.integers(0, 2))):
        facts.append(("ON_DELIVERY_ITEM_ADDED", k, draw(st.sampled_from(USERS)), draw(st.sampled_from(ONE_TIME)),
                      draw(st.integers(1, 3)), draw(st.booleans())))
    return facts


def payload(fact: Fact, p: str) -> dict[str, Any]:
    kind, i, user = fact[:3]
    uid, event_id = f"{p}-{user}", f"{p}-{'-'.join(map(str, fact[:2]))}-{fact[-1]}"
    if kind in ("ON_ORDER_COMPLETED", "ON_REFUND", "ON_CHARGEBACK"):
        return f.order(event_id, f"{p}-o{i}", fact[3], uid=uid, customer=uid, event_type=kind)
    if kind == "ON_DELIVERY_ITEM_ADDED":
        return f.delivery(event_id, f"{p}-d{i}", fact[3], fact[4], order_id=f"{p}-o0" if fact[5] else None,
                          uid=uid, customer=uid)
    return f.subscription(event_id, kind, f"{p}-s{i}", fact[3], fact[4], uid=uid, customer=uid)


def apply_in_order(facts: list[Fact], p: str) -> dict[str, dict[str, int]]:
    """The oracle: each fact once, in order; the first write of a business key wins (DESIGN §4)."""
    ledgers: dict[str, dict[str, int]] = {f"{p}-{u}": {} for u in USERS}
    for fact in facts:
        kind, i, user = fact[:3]
        book = ledgers[f"{p}-{user}"]
        if kind in ("ON_ORDER_COMPLETED", "ON_REFUND", "ON_CHARGEBACK"):
            prefix, sign = ("purchase", 1) if kind == "ON_ORDER_COMPLETED" else ("reversal", -1)
            for n, (product, quantity) in enumerate(fact[3]):
                book.setdefault(f"{prefix}:{p}-o{i}:{n}", sign * f.POINTS[product] * quantity)
        elif kind == "ON_DELIVERY_ITEM_ADDED" and not fact[5]:
            book.setdefault(f"delivery:{p}-d{i}", f.POINTS[fact[3]] * fact[4])
        elif kind in ("ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED"):
            book.setdefault(f"subscription:{p}-s{i}:{fact[4][:10]}", f.POINTS[fact[3]])
    return ledgers


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(facts=histories(), data=st.data())
def test_final_state_is_independent_of_order_and_duplication(
        running: tuple[Topology, firestore.Client, pubsub_v1.PublisherClient], facts: list[Fact],
        data: st.DataObject) -> None:
    topo, db, client = running
    p = uuid.uuid4().hex[:8]
    payloads = [payload(fact, p) for fact in facts]
    shuffled = data.draw(st.permutations(payloads))
    for dup in data.draw(st.lists(st.sampled_from(payloads), max_size=6)):
        shuffled.insert(data.draw(st.integers(0, len(shuffled))), dup)
    publish_payloads(client, topo.topic, shuffled)

    refs = [db.document(f"webhookEvents/{pl['id']}") for pl in payloads]
    assert wait_until(lambda: all(s.exists for s in db.get_all(refs)), 60)
    for uid, expected in apply_in_order(facts, p).items():
        got = {d.id: d.get("amount") for d in db.collection(f"users/{uid}/ledger").stream()}
        assert got == expected, uid
        snap = db.document(f"users/{uid}/wallet/points").get()
        assert (snap.get("paidBalance") if snap.exists else 0) == sum(got.values()) == sum(expected.values())
