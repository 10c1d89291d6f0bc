"""Isolation on the real Firestore emulator: one bad event never sinks its neighbours, an unexpected error never
dead-letters what committed, and a key held outside the commit plan is dead-lettered `wedged_key` in bounded time.
Judged by the independent model (ops/load/ledger_model.py) and the ledger's invariants."""
from __future__ import annotations

import time
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from ops.admin.catalog import map_customer
from ops.load.ledger_model import LedgerModel
from ops.local.topology import Topology
from pipeline.accounts import resolve_uid
from pipeline.firestore_transport import FirestoreConfig, FirestoreTransport
from pipeline.model import Event
from pipeline.sink import DLQ, LedgerWriter, _ApplyFn
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state

RESERVED = "__x__"
MAX_COMMITS = 20
"""A commit count no bounded path reaches: past it the injected transport refuses to go on (a planted unbounded
retry then fails the test instead of hanging it)."""


def config(topology: Topology) -> FirestoreConfig:
    return FirestoreConfig(topology.project, region="us-central1", max_write_attempts=3)


@pytest.fixture
def writer(firestore_db: firestore.Client, topology: Topology) -> LedgerWriter:
    return LedgerWriter(firestore_db, config(topology), sleep=lambda _: None)


def names(writes: list[Any]) -> list[str]:
    return [w.update.name.split("/documents/")[1] for w in writes]


def inject(monkeypatch: pytest.MonkeyPatch, fault: Any) -> list[list[str]]:
    """Route every commit through `fault(paths, send)`; returns the paths of each commit attempted."""
    real_send = FirestoreTransport._send
    attempted: list[list[str]] = []

    def send(self: FirestoreTransport, writes: list[Any]) -> None:
        attempted.append(names(writes))
        if len(attempted) > MAX_COMMITS:
            raise AssertionError(f"{len(attempted)} commits: unbounded retries")
        fault(attempted[-1], lambda: real_send(self, writes))

    monkeypatch.setattr(FirestoreTransport, "_send", send)
    return attempted


def resolved(db: firestore.Client, delivery: dict[str, Any], envelope_uid: str | None = None) -> Event | None:
    """The event as ResolveAccount hands it on (None: dead-lettered unmapped_customer). `envelope_uid` puts a uid
    into the envelope as an older ingress would have (one that did not refuse reserved ids)."""
    env = f.envelope(delivery)
    if envelope_uid is not None:
        env["data"]["customer"]["uid"] = envelope_uid
    uid = resolve_uid(env["data"]["customer"], lambda c: (db.document(f"paynowCustomers/{c}").get().to_dict()
                                                          or {}).get("uid"))
    return Event(f.message(delivery), env, uid) if uid else None


def test_ten_orders_one_reserved_uid_one_refused_the_others_credited(
        writer: LedgerWriter, firestore_db: firestore.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Order 3 names `__x__` in its checkout, its customer is mapped: credited to the mapped uid. Order 5 names
    `__x__` and its customer is not mapped: unmapped. Order 7's write is refused permanently (injected): it alone
    is `write_failed`, in one commit of ten users' orders. A replay changes nothing else."""
    map_customer(firestore_db, "c3", "m3")
    deliveries = [f.order(f"e{i}", f"o{i}", [(f.P150, 1), (f.P20, i + 1)], customer=f"c{i}",
                          uid=RESERVED if i in (3, 5) else f"u{i}") for i in range(10)]
    assert f.envelope(deliveries[3])["data"]["customer"]["uid"] is None  # today's ingress drops it
    events = {i: resolved(firestore_db, d, RESERVED if i in (3, 5) else None) for i, d in enumerate(deliveries)}
    assert events[5] is None and events[3] is not None and events[3].uid == "m3"  # treated as absent (DESIGN §4)
    batch = [e for e in events.values() if e is not None]

    def refuse_order_7(paths: list[str], send: Any) -> None:
        if "orders/o7" in paths:
            raise gexc.InvalidArgument("injected: order 7 refused")
        send()

    attempted = inject(monkeypatch, refuse_order_7)
    results = {r.event.envelope["eventId"]: r for r in writer.apply(batch)}
    assert {e: r.status for e, r in results.items()} == {
        **{f"e{i}": "applied" for i in range(10) if i not in (5, 7)}, "e7": "write_failed"}
    assert "injected: order 7 refused" in results["e7"].reason
    assert len(attempted[0]) > 20 and "orders/o7" in attempted[0]  # they were one commit, refused whole

    model = LedgerModel(f.POINTS, {"c3": "m3"})
    for i, delivery in enumerate(deliveries):
        if i != 7:
            model.add(delivery)
    assert model.unmapped() == {"e5": "unmapped_customer"}
    state = read_state(firestore_db)
    check_invariants(state)
    assert state.wallets == model.wallets() and len(state.wallets) == 8 and RESERVED not in state.wallets
    assert "e7" not in state.events and "o7" not in state.orders

    # The replay (DLQ replay puts them back together): the credited are duplicates, order 7 still fails alone.
    again = writer.apply(batch)
    assert [r.status for r in again] == ["write_failed" if r.event.envelope["eventId"] == "e7" else "duplicate"
                                         for r in again]
    assert read_state(firestore_db) == state
    # Its cause fixed, order 7's replay credits it and nothing else changes.
    monkeypatch.undo()
    [seven] = writer.apply([e for e in batch if e.envelope["eventId"] == "e7"])
    assert seven.status == "applied"
    model.add(deliveries[7])
    after = read_state(firestore_db)
    check_invariants(after)
    assert after.wallets == model.wallets()
    assert {u: w for u, w in after.wallets.items() if u != "u7"} == state.wallets


def test_an_unexpected_error_after_a_commit_landed_never_dead_letters_it(
        writer: LedgerWriter, firestore_db: firestore.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    deliveries = [f.order(f"e{i}", f"o{i}", [(f.P50, 1)], customer=f"c{i}", uid=f"u{i}") for i in range(5)]

    def crash_after_the_first(paths: list[str], send: Any) -> None:
        send()
        if len(paths) > 10:  # the group of five, committed: then something unexpected
            raise RuntimeError("injected: the reply was lost in a bug")

    attempted = inject(monkeypatch, crash_after_the_first)
    results = writer.apply([resolved(firestore_db, d) or pytest.fail("unmapped") for d in deliveries])
    assert [r.status for r in results] == ["duplicate"] * 5  # found committed: acknowledged, not dead-lettered
    assert len(attempted) == 1
    model = LedgerModel(f.POINTS, {})
    for delivery in deliveries:
        model.add(delivery)
    state = read_state(firestore_db)
    check_invariants(state)
    assert state.wallets == model.wallets()


def test_an_unexpected_error_deciding_one_event_stays_with_it(
        writer: LedgerWriter, firestore_db: firestore.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    deliveries = [f.order(f"e{i}", f"o{i}", [(f.P50, 1)], customer=f"c{i}", uid=f"u{i}") for i in range(5)]
    real_decide = LedgerWriter._decide

    def decide(self: LedgerWriter, event: Event, aggregate: Any) -> Any:
        if event.envelope["eventId"] == "e2":
            raise KeyError("injected: a bug on this event's data")
        return real_decide(self, event, aggregate)

    monkeypatch.setattr(LedgerWriter, "_decide", decide)
    results = writer.apply([resolved(firestore_db, d) or pytest.fail("unmapped") for d in deliveries])
    assert [r.status for r in results] == ["applied", "applied", "write_failed", "applied", "applied"]
    assert "injected" in results[2].reason
    model = LedgerModel(f.POINTS, {})
    for i, delivery in enumerate(deliveries):
        if i != 2:
            model.add(delivery)
    assert read_state(firestore_db).wallets == model.wallets()


def hand_credit(db: firestore.Client, uid: str, key: str, amount: int) -> None:
    """What the RUNBOOK used to advise: claim, entry and wallet written in the console, no aggregate."""
    db.document(f"ledgerKeys/{key}").set({"uid": uid, "eventId": "by-hand", "amount": amount})
    db.document(f"users/{uid}/ledger/{key}").set({"amount": amount, "kind": "purchase", "eventId": "by-hand"})
    db.document(f"users/{uid}/wallet/points").set({"paidBalance": firestore.Increment(amount)}, merge=True)


@pytest.mark.parametrize("restored_order", [False, True], ids=["hand-credit", "restored-orders-doc"])
def test_a_key_held_outside_the_commit_plan_is_wedged_key_in_bounded_time(
        firestore_db: firestore.Client, topology: Topology, monkeypatch: pytest.MonkeyPatch,
        restored_order: bool) -> None:
    hand_credit(firestore_db, "u1", "purchase:o1", 150)
    if restored_order:  # an orders doc restored from before the credit: it does not list the key
        firestore_db.document("orders/o1").set({"orderId": "o1", "uid": None, "amount": None, "purchased": False,
                                                "reversalCause": True, "refunded": True, "won": False,
                                                "entries": []})
    before = firestore_db.document("orders/o1").get()
    attempted = inject(monkeypatch, lambda paths, send: send())
    writer = LedgerWriter(firestore_db, config(topology), threads=1)  # real backoff sleeps
    started = time.monotonic()
    [result] = writer.apply([Event(f.message(delivery := f.order("e1", "o1", [(f.P150, 1)])),
                                   f.envelope(delivery), "u1")])
    elapsed = time.monotonic() - started
    assert result.status == "wedged_key", result
    assert "ledgerKeys/purchase:o1" in result.reason and "users/u1/ledger/purchase:o1" in result.reason
    assert len(attempted) <= 3 and elapsed < 5, (len(attempted), elapsed)
    after = firestore_db.document("orders/o1").get()
    assert after.exists == before.exists and after.update_time == before.update_time  # never overwritten
    assert not firestore_db.document("webhookEvents/e1").get().exists
    print(f"wedged key detected after {len(attempted)} commits in {elapsed:.2f} s")


def test_the_sink_dead_letters_a_wedged_key_with_its_verdict(firestore_db: firestore.Client,
                                                            topology: Topology) -> None:
    hand_credit(firestore_db, "u1", "purchase:o1", 20)
    fn = _ApplyFn(config(topology))
    fn.setup()
    try:
        [out] = list(fn.process([Event(f.message(d := f.order("e1", "o1", [(f.P20, 1)])), f.envelope(d), "u1")]))
    finally:
        fn.teardown()
    assert out.tag == DLQ and out.value.verdict == "wedged_key" and out.value.event_id == "e1"
