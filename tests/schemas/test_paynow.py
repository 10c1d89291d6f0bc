"""PayNow delivery -> v4 envelope: every published type, the ledger's fields, precise errors, hostile input."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    EVENT_TYPES,
    PayloadError,
    customer_ordering_key,
    decode_envelope,
    encode_envelope,
    envelope_attributes,
    envelope_from_payload,
)
from schemas import deliveries as d
from schemas import ordering_key as key_of
from schemas.paynow import bounded_key

TS = 1_764_158_400_000
SHARED = Path(__file__).resolve().parents[3] / "shared" / "paynow" / "webhook-definitions.json"


def mapped(delivery: dict[str, Any]) -> dict[str, Any]:
    return envelope_from_payload(d.encode(delivery), timestamp_ms=TS, region="us-central1")


def refused(delivery: dict[str, Any] | bytes) -> PayloadError:
    raw = delivery if isinstance(delivery, bytes) else json.dumps(delivery).encode()
    with pytest.raises(PayloadError) as info:
        envelope_from_payload(raw, timestamp_ms=TS, region="us-central1")
    return info.value


def order(**overrides: Any) -> dict[str, Any]:
    lines = [d.order_line("11", "459935272365195264", 2), d.order_line("12", "458253675014389760", 1,
                                                                          subscription_id="77")]
    delivery = d.order_completed("1001", "2001", "3001", lines, uid="u-7")
    delivery["body"].update(overrides)
    return delivery


def test_vendored_definitions_are_paynows_published_copy() -> None:
    assert SHARED.exists(), f"the team's reference copy {SHARED} is missing"
    vendored = Path(d.__file__).parent / d.DEFINITIONS_PATH
    assert vendored.read_bytes() == SHARED.read_bytes()


def test_event_types_are_pay_nows_enum() -> None:
    assert set(d.event_type_enum()) == EVENT_TYPES
    assert set(d.defined_types()) <= EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_enum_type_maps_from_a_delivery_built_from_the_definitions(event_type: str) -> None:
    delivery = d.delivery(event_type, "411486491630370816")
    if event_type in d.defined_types():
        d.validate(delivery)  # what we send ourselves is what PayNow's definition describes
    envelope = mapped(delivery)
    assert (envelope["eventType"], envelope["eventId"], envelope["version"]) == (event_type, "411486491630370816", 4)
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_unknown_future_type_is_accepted_with_best_effort_ids() -> None:
    envelope = mapped({"event_type": "ON_SOMETHING_NEW", "event_id": "5", "body": {
        "order_id": "2001", "customer": {"id": "3001"}, "anything": [1, {"x": None}]}})
    assert envelope["data"]["orderId"] == "2001"
    assert envelope["data"]["customer"] == {"id": "3001", "uid": None, "email": None}
    assert key_of(envelope) == customer_ordering_key("3001")


def test_order_carries_lines_subscription_lines_amounts_and_the_checkout_uid() -> None:
    envelope = mapped(order())
    data = envelope["data"]
    assert (data["orderId"], data["totalCents"], data["currency"]) == ("2001", 3000, "USD")
    assert data["customer"]["id"] == "3001" and data["customer"]["uid"] == "u-7"
    assert data["lines"] == [
        {"productId": "459935272365195264", "quantity": 2, "lineId": "11", "subscriptionId": None,
         "totalCents": 2000},
        {"productId": "458253675014389760", "quantity": 1, "lineId": "12", "subscriptionId": "77",
         "totalCents": 1000}]
    assert data["refund"] is None and data["chargeback"] is None and data["subscription"] is None


def test_refund_chargeback_and_cycle_carry_what_the_ledger_reads() -> None:
    refund = mapped(d.refund("1", "4001", "2001", "processing", amount_cents=777))["data"]
    assert (refund["orderId"], refund["refund"], refund["customer"]) == (
        "2001", {"id": "4001", "status": "processing", "amountCents": 777}, None)
    closing = mapped(d.chargeback("2", "5001", "2001", "lost", closed=True, customer_id="3001"))
    assert closing["eventType"] == "ON_CHARGEBACK_CLOSED"
    assert closing["data"]["chargeback"] == {"paymentId": "5001", "status": "chargeback",
                                             "chargebackStatus": "lost", "amountCents": 1000}
    cycle = mapped(d.subscription_cycle("3", "77", "458253675014389760", 4, "3001", renewed=True))["data"]
    assert cycle["subscription"] == {"id": "77", "productId": "458253675014389760", "cycle": 4,
                                     "status": "active", "totalCents": 999}


def test_raw_payload_is_the_delivery_without_its_personal_fields() -> None:
    delivery = order()
    delivery["body"].update(billing_email="ada@example.org", customer_ip="192.0.2.44")
    raw = envelope_from_payload(json.dumps(delivery, indent=3).encode(), timestamp_ms=TS, region="r")["data"]
    stripped = copy.deepcopy(delivery)
    del stripped["body"]["billing_email"], stripped["body"]["customer_ip"], stripped["body"]["billing_name"]
    del stripped["body"]["billing_address_country"]
    stripped["body"]["customer"] = {"id": delivery["body"]["customer"]["id"]}
    assert json.loads(raw["rawPayload"]) == stripped


def test_ordering_key_follows_the_customer_then_the_order_then_the_event() -> None:
    """With or without a uid, an order is keyed by its PayNow customer; a customerless refund by its order, an event
    with neither by its id (tests/schemas/test_ordering_keys.py: the set of keys is bounded)."""
    assert key_of(mapped(order())) == key_of(mapped(order(checkout=d.checkout(None)))) == customer_ordering_key("3001")
    assert key_of(mapped(d.refund("1", "4001", "2001", "completed"))) == bounded_key("order:2001")
    ignored = {"event_type": "ON_CONNECTED_USER_REGISTERED", "event_id": "9", "body": {}}
    assert key_of(mapped(ignored)) == bounded_key("event:9")


@pytest.mark.parametrize("uid", ["has/slash", "", "x" * 129, "..", "ünïcode", 42, None])
def test_a_uid_that_is_not_firebase_style_is_ignored_not_trusted(uid: Any) -> None:
    delivery = order()
    delivery["body"]["checkout"]["metadata"]["uid"] = uid
    assert mapped(delivery)["data"]["customer"]["uid"] is None


def test_attributes_duplicate_the_routing_fields() -> None:
    assert envelope_attributes(mapped(order())) == {"version": "4", "eventId": "1001",
                                                    "eventType": "ON_ORDER_COMPLETED", "region": "us-central1"}


def _without(delivery: dict[str, Any], *path: str | int) -> dict[str, Any]:
    changed = copy.deepcopy(delivery)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return changed


def _with(delivery: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    changed = copy.deepcopy(delivery)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


@pytest.mark.parametrize(("delivery", "field", "problem"), [
    (_without(order(), "event_id"), "event_id", "missing"),
    (_with(order(), 1001, "event_id"), "event_id", "must be a string, got integer"),
    (_with(order(), "a/b", "event_id"), "event_id", "must match"),
    (_with(order(), "on_order_completed", "event_type"), "event_type", "must match"),
    (_with(order(), None, "body"), "body", "must not be null"),
    (_with(order(), [], "body"), "body", "must be an object, got array"),
    (_without(order(), "body", "id"), "body.id", "missing"),
    (_with(order(), None, "body", "customer"), "body.customer", "must not be null"),
    (_with(order(), 7, "body", "customer", "id"), "body.customer.id", "must be a string, got integer"),
    (_with(order(), {}, "body", "lines"), "body.lines", "must be an array, got object"),
    (_with(order(), "2", "body", "lines", 0, "quantity"), "body.lines[0].quantity", "must be an integer"),
    (_with(order(), 0, "body", "lines", 1, "quantity"), "body.lines[1].quantity", "must be between 1"),
    (_with(order(), True, "body", "lines", 0, "quantity"), "body.lines[0].quantity", "got boolean"),
    (_with(order(), 1.5, "body", "total_amount"), "body.total_amount", "must be an integer, got number"),
    (_with(order(), 2**63, "body", "total_amount"), "body.total_amount", "must be between"),
    (_without(d.refund("1", "2", "3", "completed"), "body", "status"), "body.status", "missing"),
    (_with(d.refund("1", "2", "3", "completed"), 3, "body", "order_id"), "body.order_id", "must be a string"),
    (_without(d.chargeback("1", "2", "3", "won"), "body", "chargeback_status"), "body.chargeback_status",
     "missing"),
    (_with(d.subscription_cycle("1", "2", "3", 1, "4"), "1", "body", "billing_cycle_sequence"),
     "body.billing_cycle_sequence", "must be an integer, got string"),
    (_with(d.subscription_cycle("1", "2", "3", 1, "4"), "\ud800", "body", "product_id"), "body.product_id",
     "unpaired surrogates"),
])
def test_unmappable_delivery_names_the_exact_field(delivery: dict[str, Any], field: str, problem: str) -> None:
    error = refused(json.dumps(delivery).encode())
    assert error.field == field
    assert problem in error.problem


@pytest.mark.parametrize(("raw", "problem"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"event_type": "ON_REFUND", "event_id": "1", "body": {"amount": 1' + b"0" * 5000 + b"}}", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b'"just a string"', "must be a JSON object"),
    (b"", "not valid JSON"),
])
def test_hostile_bytes_are_refused_precisely(raw: bytes, problem: str) -> None:
    error = refused(raw)
    assert error.field == "body" and problem in error.problem


@pytest.mark.parametrize("depth", [300, 900])
def test_a_field_nested_past_the_stored_depth_is_refused_not_a_recursion(depth: int) -> None:
    """Parsed fine, but deeper than the minimised copy can be stored: a 400 naming the body (the HTTP fuzz found the
    fallback encoder recursing on a 2,000-deep `store_id`)."""
    delivery = order()
    delivery["body"]["store_id"] = json.loads("[" * depth + "]" * depth)
    error = refused(d.encode(delivery))
    assert (error.field, error.problem) == ("body", "nested deeper than 255 levels")


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
def test_an_integer_past_64_bits_is_stored_exactly_not_as_a_float(number: int) -> None:
    """orjson would read it as a float; the minimised copy keeps the delivery's own digits."""
    delivery = order()
    delivery["body"]["store_id"] = number
    envelope = envelope_from_payload(d.encode(delivery), timestamp_ms=1, region="r")
    assert json.loads(envelope["data"]["rawPayload"])["body"]["store_id"] == number


def test_huge_exponent_is_a_type_error_not_a_crash() -> None:
    raw = d.encode(order()).replace(b'"total_amount":3000', b'"total_amount":1e9999999999')
    error = refused(raw)
    assert (error.field, error.problem) == ("body.total_amount", "must be an integer, got number")


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.text(st.characters(categories=["Cs", "Cc", "L", "N", "P"]), min_size=1, max_size=10),
    st.sampled_from(["\ud800", "a/b", "..", "x" * 300, "\x00"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


READ = {"event_type", "event_id", "body", "id", "order_id", "customer", "checkout", "metadata", "uid", "lines",
        "product_id", "quantity", "subscription_id", "total_amount", "amount", "status", "chargeback_status",
        "currency", "billing_cycle_sequence"}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path the mapping reads (and the containers on the way), where a hostile value matters."""
    found = [prefix] if prefix and (isinstance(prefix[-1], int) or prefix[-1] in READ) else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


SAMPLES = [order(), d.refund("1", "2", "3", "completed", customer_id="4"), d.chargeback("1", "2", "3", "won"),
           d.subscription_cycle("1", "2", "3", 1, "4", uid="u")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=st.sampled_from(SAMPLES), data=st.data(), value=HOSTILE)
def test_any_value_at_any_path_maps_or_is_refused_naming_a_field(sample: dict[str, Any], data: st.DataObject,
                                                                   value: Any) -> None:
    path = data.draw(st.sampled_from(_paths(sample)))
    raw = json.dumps(_with(sample, value, *path), allow_nan=True).encode("utf-8", "surrogatepass")
    try:
        envelope = envelope_from_payload(raw, timestamp_ms=TS, region="r")
    except PayloadError as exc:
        assert exc.field and exc.problem
        return
    encode_envelope(envelope)  # whatever maps must be encodable: never a 5xx later on the request path
