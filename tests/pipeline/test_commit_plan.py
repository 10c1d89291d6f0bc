"""The commit plan without Firestore: waves, commit groups and the writes of one commit, against hand-written
expectations."""
from __future__ import annotations

import datetime as dt
from typing import Any

from pipeline.commit_plan import (
    Create,
    Increment,
    Pending,
    ReplaceIfUnchanged,
    commit_writes,
    event_paths,
    groups,
    lanes,
    waves,
)
from pipeline.ledger import Decision, OrderAggregate, Product, decide, event_class
from pipeline.model import Event
from tests.pipeline import factories as f

PRODUCTS = {pid: Product(points) for pid, points in f.POINTS.items()}
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def event(delivery: dict[str, Any], uid: str | None = "u1") -> Event:
    return Event(f.message(delivery, publish_time_ms=1_767_000_000_000), f.envelope(delivery), uid)


def pending(index: int, e: Event, aggregate: OrderAggregate | None = None, update_time: Any = None) -> Pending:
    return Pending(index, e, decide(e.envelope, PRODUCTS, e.uid, aggregate), update_time)


def test_a_purchase_and_a_cycle_of_one_user_in_one_commit() -> None:
    purchase = event(f.order("e1", "o1", [(f.P20, 2)]))
    cycle = event(f.cycle("s1", "sub1", f.BASIC_MONTHLY, 1))
    writes = commit_writes([pending(0, purchase), pending(1, cycle)], worker_region="europe-west1", now=NOW,
                           event_ttl_days=30)
    assert [(type(w).__name__, w.path) for w in writes] == [
        ("Create", "webhookEvents/e1"), ("ReplaceIfUnchanged", "orders/o1"), ("Create", "users/u1/ledger/purchase:o1"),
        ("Create", "webhookEvents/s1"), ("Create", "ledgerKeys/subscription:sub1:1"),
        ("Create", "users/u1/ledger/subscription:sub1:1"),
        ("Increment", "users/u1/wallet/points")]
    event_doc, order, entry = writes[:3]
    assert isinstance(event_doc, Create) and event_doc.server_time == ("processedAt",)
    assert event_doc.fields["status"] == "applied" and event_doc.fields["workerRegion"] == "europe-west1"
    assert event_doc.fields["entryIds"] == ["purchase:o1"] and event_doc.fields["orderId"] == "o1"
    assert event_doc.fields["expiresAt"] == dt.datetime(2026, 2, 1, 3, 4, 5, tzinfo=dt.UTC)
    assert event_doc.fields["publishedAt"] == dt.datetime.fromtimestamp(1_767_000_000, dt.UTC)
    assert isinstance(order, ReplaceIfUnchanged) and order.update_time is None  # created only if still absent
    assert (order.fields["orderId"], order.fields["uid"], order.fields["amount"], order.fields["entries"]) == (
        "o1", "u1", 40, ["purchase:o1"])
    assert isinstance(entry, Create) and entry.fields["amount"] == 40 and entry.server_time == ("createdAt",)
    assert writes[-1] == Increment("users/u1/wallet/points", {"paidBalance": 40 + 50, "promoBalance": 0},
                                   ("updatedAt",))


def test_a_refund_is_conditioned_on_the_version_it_was_decided_on() -> None:
    refund = event(f.refund("r1", "o1"), uid=None)
    read = OrderAggregate(uid="u1", amount=20, purchased=True, entries=("purchase:o1",))
    version = object()  # what the transport read: the plan carries it, never looks into it
    writes = commit_writes([pending(0, refund, read, version)], worker_region="us-central1", now=NOW,
                           event_ttl_days=1)
    order = writes[1]
    assert isinstance(order, ReplaceIfUnchanged) and order.update_time is version
    assert order.fields["entries"] == ["purchase:o1", "reversal:o1"] and order.fields["refunded"] is True
    assert writes[-1] == Increment("users/u1/wallet/points", {"paidBalance": -20, "promoBalance": 0},
                                   ("updatedAt",))


def test_an_ignored_event_writes_only_its_event_document() -> None:
    ignored = event(f.refund("r1", "o1", "pending"), uid=None)
    assert [w.path for w in commit_writes([pending(0, ignored)], worker_region="x", now=NOW, event_ttl_days=1)] == [
        "webhookEvents/r1"]


def test_events_sharing_a_document_land_in_successive_waves_in_arrival_order() -> None:
    events = [event(f.order("e1", "o1", [(f.P20, 1)])), event(f.refund("e2", "o1"), uid=None),
              event(f.order("e3", "o2", [(f.P20, 1)])), event(f.order("e1", "o1", [(f.P20, 1)])),
              event(f.cycle("s1", "sub1", f.BASIC_MONTHLY, 1)), event(f.cycle("s2", "sub1", f.BASIC_MONTHLY, 1))]
    work = [(i, e, event_class(e.envelope)) for i, e in enumerate(events)]
    assert [[i for i, _, _ in wave] for wave in waves(work)] == [[0, 2, 4], [1, 5], [3]]
    assert event_paths(events[4], "SUBSCRIPTION") == {"webhookEvents/s1", "ledgerKeys/subscription:sub1:1"}


def decision(uid: str | None, entries: int) -> Decision:
    return Decision("applied" if entries else "ignored", uid=uid,
                    entries={f"k{n}": {"amount": 1} for n in range(entries)})


def test_commit_groups_keep_a_users_events_together_and_stay_under_firestores_limits() -> None:
    e = event(f.order("e1", "o1", [(f.P20, 1)]))
    mixed = [Pending(i, e, decision(uid, 1)) for i, uid in enumerate(["a", "b", "a"])]
    assert [[p.index for p in g] for g in groups(mixed)] == [[0, 2, 1]]
    many = [Pending(i, e, decision(None, 0)) for i in range(120)]  # 3 writes each: the 50-event cap first
    assert [len(g) for g in groups(many)] == [50, 50, 20]
    wide = [Pending(i, e, decision("a", 100)) for i in range(5)]  # 203 writes each: two fit under 450
    assert [len(g) for g in groups(wide)] == [2, 2, 1]


def test_a_hot_users_events_share_one_commit_up_to_the_write_limit_and_one_lane() -> None:
    e = event(f.order("e1", "o1", [(f.P20, 1)]))
    hot = [Pending(i, e, decision("a", 1)) for i in range(120)]  # 5 writes each by the estimate: 90 per commit
    others = [Pending(120 + i, e, decision(uid, 1)) for i, uid in enumerate("bcb")]
    found = groups(hot + others)
    assert [len(g) for g in found] == [90, 33]  # not 50 + 50 + 23: the wallet written twice, not three times
    assert [[{p.decision.uid for p in g} for g in lane] for lane in lanes(found)] == [[{"a"}, {"a", "b", "c"}]]
    assert [len(g) for g in groups(hot[:60] + others)] == [60, 3]  # a new group at a user boundary past 50 events


def test_lanes_never_put_one_wallet_in_two_lanes() -> None:
    e = event(f.order("e1", "o1", [(f.P20, 1)]))
    g1, g2, g3 = ([Pending(i, e, decision(uid, 1)) for i, uid in enumerate(uids)] for uids in ("a", "b", "ab"))
    ignored = [Pending(9, e, decision(None, 0))]
    assert lanes([g1, g2, ignored, g3]) == [[g1, g2, g3], [ignored]]
