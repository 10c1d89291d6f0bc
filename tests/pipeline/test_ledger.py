"""Pure ledger rules: one envelope + catalog + uid -> the entries it creates (DESIGN §4)."""
from __future__ import annotations

import datetime as dt

import pytest

from pipeline.ledger import (
    EventWrites,
    InvalidEvent,
    Product,
    UnmappedProduct,
    billing_period,
    event_document,
    plan_event,
)
from tests.pipeline import factories as f

CATALOG = {pid: Product(points, "subscription" if pid in (f.BASIC_MONTHLY, f.PRO_MONTHLY) else "one_time")
           for pid, points in f.POINTS.items()}
RETIRED = "999"


def plan(payload: dict) -> EventWrites:
    return plan_event(f.envelope(payload), {**CATALOG, RETIRED: Product(70, active=False)}, "u1")


def amounts(writes: EventWrites) -> dict[str, int]:
    return {entry_id: entry["amount"] for entry_id, entry in writes.entries.items()}


def test_multi_line_order_credits_every_line_points_times_quantity() -> None:
    writes = plan(f.order("e1", "o1", [(f.P20, 3), (f.P500, 1), (f.P20, 1)]))
    assert amounts(writes) == {"purchase:o1:0": 60, "purchase:o1:1": 500, "purchase:o1:2": 20}
    assert writes.delta() == 580
    entry = writes.entries["purchase:o1:1"]
    assert entry == {"amount": 500, "kind": "purchase", "source": "paynow", "eventId": "e1",
                     "eventType": "ON_ORDER_COMPLETED", "region": "us-central1", "orderId": "o1",
                     "productId": f.P500}
    assert all(isinstance(a, int) for a in amounts(writes).values())


@pytest.mark.parametrize("event_type", ["ON_REFUND", "ON_CHARGEBACK"])
def test_refund_and_chargeback_write_the_same_negative_reversal_keys(event_type: str) -> None:
    writes = plan(f.order("e2", "o1", [(f.P20, 3), (f.P150, 2)], event_type=event_type))
    assert amounts(writes) == {"reversal:o1:0": -60, "reversal:o1:1": -300}
    assert {e["kind"] for e in writes.entries.values()} == {"reversal"}


def test_refund_before_purchase_nets_to_zero_in_either_order() -> None:
    purchase = plan(f.order("e1", "o1", [(f.P50, 2), (f.P20, 1)]))
    refund = plan(f.order("e2", "o1", [(f.P50, 2), (f.P20, 1)], event_type="ON_REFUND"))
    assert set(purchase.entries).isdisjoint(refund.entries)
    assert refund.delta() + purchase.delta() == 0


@pytest.mark.parametrize("event_type", ["ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED"])
def test_subscription_credit_is_keyed_by_billing_period(event_type: str) -> None:
    writes = plan(f.subscription("e3", event_type, "s1", f.PRO_MONTHLY, "2026-03-01T05:00:00+02:00"))
    assert amounts(writes) == {"subscription:s1:2026-03-01": 150}
    assert writes.entries["subscription:s1:2026-03-01"]["subscriptionId"] == "s1"


def test_activation_and_renewal_of_the_same_period_share_one_key_and_periods_differ() -> None:
    activated = plan(f.subscription("e1", "ON_SUBSCRIPTION_ACTIVATED", "s1", f.BASIC_MONTHLY, "2026-01-01"))
    renewed_same = plan(f.subscription("e2", "ON_SUBSCRIPTION_RENEWED", "s1", f.BASIC_MONTHLY, "2026-01-01T00:00Z"))
    renewed_next = plan(f.subscription("e3", "ON_SUBSCRIPTION_RENEWED", "s1", f.BASIC_MONTHLY, "2026-02-01"))
    assert set(activated.entries) == set(renewed_same.entries) == {"subscription:s1:2026-01-01"}
    assert set(renewed_next.entries) == {"subscription:s1:2026-02-01"}


@pytest.mark.parametrize("event_type", ["ON_SUBSCRIPTION_CANCELED", "ON_SUBSCRIPTION_EXPIRED"])
def test_cancel_and_expire_are_recorded_without_credit(event_type: str) -> None:
    writes = plan(f.subscription("e4", event_type, "s1", f.BASIC_MONTHLY, None))
    assert writes.entries == {} and writes.delta() == 0


def test_delivery_item_alone_is_credited_and_one_tied_to_an_order_is_recorded_only() -> None:
    assert amounts(plan(f.delivery("e5", "d1", f.P150, 2))) == {"delivery:d1": 300}
    assert plan(f.delivery("e6", "d2", f.P150, 2, order_id="o9")).entries == {}


def test_unknown_or_retired_product_is_unmapped_but_a_retired_one_can_be_reversed() -> None:
    with pytest.raises(UnmappedProduct, match="123 is unknown"):
        plan(f.order("e1", "o1", [(f.P20, 1), ("123", 1)]))
    with pytest.raises(UnmappedProduct, match="inactive"):
        plan(f.order("e1", "o1", [(RETIRED, 1)]))
    with pytest.raises(UnmappedProduct):
        plan(f.subscription("e3", "ON_SUBSCRIPTION_RENEWED", "s1", "123", "2026-01-01"))
    with pytest.raises(UnmappedProduct):
        plan(f.delivery("e5", "d1", "123", 1))
    assert amounts(plan(f.order("e2", "o1", [(RETIRED, 1)], event_type="ON_REFUND"))) == {"reversal:o1:0": -70}


@pytest.mark.parametrize(("text", "day"), [
    ("2026-01-31T23:30:00-02:00", "2026-02-01"), ("2026-01-31", "2026-01-31"), ("1767225600", "2026-01-01"),
    ("1767225600000", "2026-01-01"), ("2026-05-04T10:00:00.123456Z", "2026-05-04")])
def test_billing_period_is_the_utc_date(text: str, day: str) -> None:
    assert billing_period(text) == day


@pytest.mark.parametrize("text", [None, "", "next tuesday"])
def test_unreadable_billing_period_is_invalid(text: str | None) -> None:
    with pytest.raises(InvalidEvent):
        billing_period(text)


def test_event_document_status_and_fields() -> None:
    env = f.envelope(f.order("e1", "o1", [(f.P20, 1), (f.P50, 1)]), region="europe-west1")
    writes = plan_event(env, CATALOG, "u1")
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def doc(entry_ids: list[str]) -> dict:
        return event_document(env, writes, entry_ids, ordering_key="uid:u1", worker_region="us-central1",
                              published_at=when, processed_at=when, expires_at=when + dt.timedelta(days=30))

    full = doc(list(writes.entries))
    assert full["status"] == "applied" and full["entryIds"] == ["purchase:o1:0", "purchase:o1:1"]
    assert full["region"] == "europe-west1" and full["workerRegion"] == "us-central1"
    assert {"eventId", "eventType", "uid", "orderingKey", "publishedAt", "processedAt", "expiresAt",
            "receivedAt"} <= set(full)
    assert doc(["purchase:o1:1"])["status"] == "applied"
    assert doc([])["status"] == "duplicate_business_key"
    cancel = f.envelope(f.subscription("e9", "ON_SUBSCRIPTION_CANCELED", "s1", f.BASIC_MONTHLY, None))
    recorded = event_document(cancel, plan_event(cancel, CATALOG, "u1"), [], ordering_key="uid:u1",
                              worker_region="r", published_at=when, processed_at=when, expires_at=when)
    assert recorded["status"] == "recorded"


def test_product_document_validation() -> None:
    assert Product.from_doc({"points": 5, "kind": "one_time"}) == Product(5, "one_time", True)
    for bad in ({"points": 1.5}, {"points": -1}, {"points": True}, {}):
        with pytest.raises(ValueError, match="points"):
            Product.from_doc(bad)
