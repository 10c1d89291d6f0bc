"""Pure ledger rules (ledger spec): envelope + catalog + uid + order aggregate -> decision, for every event class."""
from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from pipeline.ledger import (
    Decision,
    InvalidEvent,
    OrderAggregate,
    Product,
    UnmappedProduct,
    decide,
    event_class,
    event_document,
    needs_uid,
)
from schemas import encode_legacy
from schemas.codec import decode_envelope
from tests.pipeline import factories as f

CATALOG = {pid: Product(points, "subscription" if pid in f.SUBSCRIPTIONS else "one_time",
                        active=pid != f.LEGACY) for pid, points in f.POINTS.items()}


def run(deliveries: list[dict[str, Any]], uid: str | None = "u1",
        catalog: dict[str, Product] | None = None) -> tuple[OrderAggregate | None, list[Decision]]:
    """Apply the decisions of one order's events in sequence, as the sink would (aggregate written back)."""
    aggregate: OrderAggregate | None = None
    decisions = []
    for delivery in deliveries:
        decision = decide(f.envelope(delivery), catalog or CATALOG, uid, aggregate)
        decisions.append(decision)
        if decision.aggregate is not None:
            aggregate = decision.aggregate
    return aggregate, decisions


def amounts(decisions: list[Decision]) -> dict[str, int]:
    found: dict[str, int] = {}
    for d in decisions:
        for key, entry in d.entries.items():
            assert key not in found, f"{key} written twice"
            found[key] = entry["amount"]
    return found


def test_order_credits_non_subscription_lines_once_with_their_detail() -> None:
    aggregate, [d] = run([f.order("e1", "o1", [(f.P20, 3), (f.P500, 1), (f.BASIC_MONTHLY, 1, "s1"), (f.LEGACY, 2)])])
    assert d.status == "applied" and d.uid == "u1" and d.order_id == "o1"
    assert d.entries == {"purchase:o1": {
        "amount": 660, "kind": "purchase", "source": "paynow", "eventId": "e1", "eventType": "ON_ORDER_COMPLETED",
        "region": "us-central1", "orderId": "o1",
        "lines": [{"productId": f.P20, "quantity": 3, "points": 20},
                  {"productId": f.P500, "quantity": 1, "points": 500},
                  {"productId": f.LEGACY, "quantity": 2, "points": 50}]}}  # a retired product is still credited
    assert aggregate == OrderAggregate(uid="u1", amount=660, purchased=True, entries=("purchase:o1",))


def test_order_of_only_subscription_lines_records_flags_without_entries() -> None:
    aggregate, decisions = run([f.order("e1", "o1", [(f.PRO_MONTHLY, 1, "s1")]), f.refund("r1", "o1")])
    assert [d.status for d in decisions] == ["recorded", "recorded"] and amounts(decisions) == {}
    assert aggregate == OrderAggregate(uid="u1", amount=0, purchased=True, reversal_cause=True, refunded=True)


def test_missing_product_is_unmapped_but_a_subscription_line_needs_no_catalog_entry() -> None:
    with pytest.raises(UnmappedProduct, match="404"):
        run([f.order("e1", "o1", [(f.P20, 1), ("404", 1)])])
    _, [d] = run([f.order("e1", "o1", [(f.P20, 1), ("404", 1, "s1")])])
    assert amounts([d]) == {"purchase:o1": 20}


def test_the_amount_is_priced_once_and_reversals_use_the_stored_amount() -> None:
    aggregate, [d] = run([f.order("e1", "o1", [(f.P50, 2)])])
    cheaper = {**CATALOG, f.P50: Product(1)}
    reversal = decide(f.envelope(f.refund("r1", "o1")), cheaper, None, aggregate)
    assert amounts([d, reversal]) == {"purchase:o1": 100, "reversal:o1": -100}
    # and a product deleted from the catalog since does not matter once the order is priced
    resend = decide(f.envelope(f.order("e2", "o1", [("404", 1)])), {}, "u1", reversal.aggregate)
    assert resend.status == "duplicate_business_key" and resend.aggregate is None


@pytest.mark.parametrize("status", ["created", "approved", "processing", "canceled", "failed"])
def test_a_refund_that_is_not_completed_is_ignored_with_its_status(status: str) -> None:
    d = decide(f.envelope(f.refund("r1", "o1", status)), CATALOG, None, OrderAggregate(purchased=True, amount=5))
    assert d == Decision("ignored", reason=f"refund status {status!r} is not completed")


def test_a_refund_before_its_order_is_recorded_and_the_order_then_nets_zero_in_one_decision() -> None:
    aggregate, decisions = run([f.refund("r1", "o1"), f.order("e1", "o1", [(f.P150, 1)])])
    assert [d.status for d in decisions] == ["recorded", "applied"]
    assert decisions[0].uid is None and decisions[0].aggregate == OrderAggregate(reversal_cause=True, refunded=True)
    assert decisions[1].entries.keys() == {"purchase:o1", "reversal:o1"} and decisions[1].delta() == 0
    assert decisions[1].entries["reversal:o1"]["kind"] == "reversal"
    assert aggregate is not None and aggregate.uid == "u1"


def test_a_second_copy_of_an_order_under_another_uid_credits_nothing_and_keeps_the_first_uid() -> None:
    aggregate, _ = run([f.order("e1", "o1", [(f.P20, 1)], uid="ua")], uid="ua")
    again = decide(f.envelope(f.order("e2", "o1", [(f.P20, 1)], uid=None)), CATALOG, "ub", aggregate)
    assert again == Decision("duplicate_business_key", uid="ua", order_id="o1")


def test_won_then_completed_refund_voids_the_reinstatement() -> None:
    _, decisions = run([f.order("e1", "o1", [(f.P500, 1)]), f.chargeback("c1", "o1"),
                        f.chargeback("c2", "o1", "won", closed=True), f.refund("r1", "o1")])
    assert [d.status for d in decisions] == ["applied"] * 4
    assert amounts(decisions) == {"purchase:o1": 500, "reversal:o1": -500, "reinstatement:o1": 500,
                                  "reinstatement-void:o1": -500}
    assert decisions[3].entries["reinstatement-void:o1"]["kind"] == "reinstatement-void"


def test_a_closing_without_its_opening_is_a_reversal_cause() -> None:
    _, lost = run([f.order("e1", "o1", [(f.P20, 1)]), f.chargeback("c2", "o1", "lost", closed=True)])
    assert amounts(lost) == {"purchase:o1": 20, "reversal:o1": -20}
    _, won = run([f.chargeback("c2", "o1", "won", closed=True), f.order("e1", "o1", [(f.P20, 1)])])
    assert [d.status for d in won] == ["recorded", "applied"]
    assert amounts(won) == {"purchase:o1": 20, "reversal:o1": -20, "reinstatement:o1": 20}


def test_a_second_chargeback_or_refund_is_a_duplicate_business_key() -> None:
    _, decisions = run([f.order("e1", "o1", [(f.P20, 1)]), f.chargeback("c1", "o1"), f.refund("r1", "o1"),
                        f.refund("r2", "o1"), f.chargeback("c3", "o1")])
    assert [d.status for d in decisions] == ["applied", "applied", "recorded", "duplicate_business_key",
                                             "duplicate_business_key"]
    assert decisions[3].aggregate is None and decisions[3].uid == "u1"


# Every subset of an order's events, in every order: the net is the spec's formula of the SET, each key once.
ORDER_EVENTS = {"P": f.order("e1", "o1", [(f.P150, 2), (f.P20, 1)]), "F": f.refund("r1", "o1"),
                "X": f.chargeback("c1", "o1"), "W": f.chargeback("c2", "o1", "won", closed=True),
                "L": f.chargeback("c3", "o1", "lost", closed=True)}
SEQUENCES = [seq for k in range(1, 6) for seq in itertools.permutations("PFXWL", k)]


@pytest.mark.parametrize("sequence", SEQUENCES, ids="".join)
def test_every_flag_combination_in_every_order_nets_the_formula(sequence: tuple[str, ...]) -> None:
    aggregate, decisions = run([ORDER_EVENTS[s] for s in sequence])
    a = 320
    seen = set(sequence)
    purchased, reversed_, won, refunded = "P" in seen, bool(seen & {"F", "X", "W", "L"}), "W" in seen, "F" in seen
    expected = a * purchased - a * (purchased and reversed_) + a * (purchased and reversed_ and won and not refunded)
    entries = amounts(decisions)
    assert sum(entries.values()) == expected
    assert ("reversal:o1" in entries) == (purchased and reversed_)
    assert all(abs(v) == a for v in entries.values())
    assert aggregate is not None and aggregate.entries == tuple(entries) and aggregate.amount == (a if purchased
                                                                                                 else None)
    for d in decisions:
        assert d.status == ("applied" if d.entries else "recorded" if d.aggregate else "duplicate_business_key")


def test_subscription_cycle_is_keyed_by_cycle_and_priced_from_the_catalog() -> None:
    d = decide(f.envelope(f.cycle("e1", "s1", f.PRO_ANNUAL, 3)), CATALOG, "u1", None)
    assert d.status == "applied" and d.uid == "u1" and d.aggregate is None
    assert d.entries == {"subscription:s1:3": {
        "amount": 1800, "kind": "subscription", "source": "paynow", "eventId": "e1",
        "eventType": "ON_SUBSCRIPTION_RENEWED", "region": "us-central1", "subscriptionId": "s1", "cycle": 3}}
    assert d.as_duplicate() == Decision("duplicate_business_key", uid="u1")
    activated = decide(f.envelope(f.cycle("e0", "s1", f.PRO_ANNUAL, 1)), CATALOG, "u1", None)
    assert set(activated.entries) == {"subscription:s1:1"}
    with pytest.raises(UnmappedProduct):
        decide(f.envelope(f.cycle("e2", "s1", "404", 1)), CATALOG, "u1", None)


@pytest.mark.parametrize("event_type", ["ON_PAYMENT_COMPLETED", "ON_PAYMENT_FAILED", "ON_DELIVERY_ITEM_ADDED",
                                        "ON_TRIAL_ACTIVATED", "ON_SUBSCRIPTION_CANCELED",
                                        "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT", "ON_CONNECTED_USER_REGISTERED",
                                        "ON_PURCHASE_FOLLOW_UP_ATTEMPT_SUCCEEDED", "ON_A_TYPE_FROM_THE_FUTURE"])
def test_every_other_type_is_ignored_and_needs_no_uid(event_type: str) -> None:
    env = f.envelope(f.no_effect(event_type, "e1", customer_id="c1"))
    assert event_class(env) == "IGNORED" and not needs_uid(env)
    assert decide(env, {}, None, None) == Decision("ignored", reason=f"{event_type} has no ledger effect")


def test_only_orders_and_cycles_need_a_uid() -> None:
    assert needs_uid(f.envelope(f.order("e1", "o1", [(f.P20, 1)])))
    assert needs_uid(f.envelope(f.cycle("e1", "s1", f.BASIC_MONTHLY, 1)))
    for delivery in (f.refund("r", "o1", customer="c1"), f.chargeback("c", "o1"), f.chargeback("c", "o1", closed=True),
                     f.refund("r", "o1", "failed")):
        assert not needs_uid(f.envelope(delivery))
    with pytest.raises(InvalidEvent, match="uid"):
        decide(f.envelope(f.order("e1", "o1", [(f.P20, 1)])), CATALOG, None, None)


def _v3(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    record = {"version": 3, "minCompatible": 2, "eventId": "old", "eventType": event_type, "timestamp": 0,
              "region": "r", "data": {"customer": {"id": "c1", "uid": "u1"}, "rawPayload": b"", **data}}
    return decode_envelope(encode_legacy(3, record))


def test_pre_v4_envelopes_resolve_by_defaults() -> None:
    refund = _v3("ON_REFUND", {"orderId": "o1", "lines": [{"productId": f.P20, "quantity": 1}]})
    d = decide(refund, CATALOG, None, OrderAggregate(uid="u1", amount=20, purchased=True, entries=("purchase:o1",)))
    assert amounts([d]) == {"reversal:o1": -20}  # no refund record: the old contract's completed refund
    cycle = _v3("ON_SUBSCRIPTION_RENEWED", {"subscription": {"id": "s1", "productId": f.BASIC_MONTHLY,
                                                              "periodStart": "2026-01-01"}})
    with pytest.raises(InvalidEvent, match="billing_cycle_sequence"):
        event_class(cycle)
    assert not needs_uid(cycle)
    order = _v3("ON_ORDER_COMPLETED", {"orderId": "o2", "lines": [{"productId": f.P50, "quantity": 2}]})
    assert amounts([decide(order, CATALOG, "u1", None)]) == {"purchase:o2": 100}
    with pytest.raises(InvalidEvent, match="order id"):
        event_class(_v3("ON_ORDER_COMPLETED", {"orderId": None}))


def test_event_document_fields() -> None:
    env = f.envelope(f.refund("r1", "o1", "failed"), region="europe-west1")
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    decision = decide(env, CATALOG, None, None)
    doc = event_document(env, decision, ordering_key="order:o1", worker_region="us-central1", published_at=when,
                         expires_at=when + dt.timedelta(days=30))
    assert doc["status"] == "ignored" and doc["reason"] == "refund status 'failed' is not completed"
    assert doc["region"] == "europe-west1" and doc["workerRegion"] == "us-central1" and doc["uid"] is None
    assert {"eventId", "eventType", "orderingKey", "entryIds", "publishedAt", "expiresAt", "receivedAt"} <= set(doc)
    applied = decide(f.envelope(f.order("e1", "o1", [(f.P20, 1)])), CATALOG, "u1", None)
    doc = event_document(env, applied, ordering_key="uid:u1", worker_region="r", published_at=when, expires_at=when)
    assert doc["entryIds"] == ["purchase:o1"] and doc["orderId"] == "o1" and doc["uid"] == "u1"


def test_product_document_validation() -> None:
    assert Product.from_doc({"points": 5, "kind": "one_time"}) == Product(5, "one_time", True)
    for bad in ({"points": 1.5}, {"points": -1}, {"points": True}, {}):
        with pytest.raises(ValueError, match="points"):
            Product.from_doc(bad)
