"""PayNow body -> v3 envelope mapping, ordering keys, attributes and precise errors."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    EVENT_TYPES,
    PayloadError,
    decode_envelope,
    encode_envelope,
    envelope_attributes,
    envelope_from_payload,
)
from schemas import ordering_key as key_of

TS = 1_764_158_400_000


def order_payload(**order: Any) -> dict[str, Any]:
    body = {"id": "evt-o1", "pretty_id": "P-9",
            "customer": {"id": 42, "email": "u@example.com", "metadata": {"uid": "u-7"}},
            "lines": [{"product_id": 459935272365195264, "quantity": 2, "price": 1.99},
                      {"product_id": "458256188073574400", "quantity": 1, "price": "49.00"}]}
    body.update(order)
    return {"id": "evt-1", "event_type": "ON_ORDER_COMPLETED", "data": {"order": body}}


def mapped(payload: dict[str, Any]) -> dict[str, Any]:
    return envelope_from_payload(json.dumps(payload).encode(), timestamp_ms=TS, region="us-central1")


def test_multi_line_order_keeps_every_line_as_integers_and_text() -> None:
    envelope = mapped(order_payload())
    assert envelope["eventId"] == "evt-1"
    assert envelope["region"] == "us-central1"
    assert envelope["timestamp"] == TS
    assert envelope["data"]["orderId"] == "evt-o1"
    assert envelope["data"]["customer"] == {"id": "42", "email": "u@example.com", "uid": "u-7"}
    assert envelope["data"]["lines"] == [
        {"productId": "459935272365195264", "quantity": 2, "price": "1.99"},
        {"productId": "458256188073574400", "quantity": 1, "price": "49.00"},
    ]
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_raw_payload_is_kept_byte_for_byte() -> None:
    body = json.dumps(order_payload(), indent=3).encode()
    assert envelope_from_payload(body, timestamp_ms=TS, region="r")["data"]["rawPayload"] == body


def test_ordering_key_prefers_uid_then_customer() -> None:
    assert key_of(mapped(order_payload())) == "uid:u-7"
    anonymous = order_payload(customer={"id": "c-9", "metadata": {}})
    assert key_of(mapped(anonymous)) == "customer:c-9"


def test_attributes_duplicate_the_routing_fields() -> None:
    assert envelope_attributes(mapped(order_payload())) == {
        "version": "3", "eventId": "evt-1", "eventType": "ON_ORDER_COMPLETED", "region": "us-central1"}


def test_subscription_renewal_maps_period_and_customer() -> None:
    payload = {"id": "evt-s", "event_type": "ON_SUBSCRIPTION_RENEWED", "data": {"subscription": {
        "id": "sub-1", "product_id": "458253675014389760", "status": "active",
        "current_period_start": "2026-11-01T00:00:00Z", "customer": {"id": "c-1", "metadata": {"uid": "u-1"}}}}}
    envelope = mapped(payload)
    assert envelope["data"]["subscription"] == {"id": "sub-1", "productId": "458253675014389760",
                                                "periodStart": "2026-11-01T00:00:00Z", "status": "active"}
    assert key_of(envelope) == "uid:u-1"


def test_delivery_item_takes_the_customer_beside_it() -> None:
    payload = {"id": "evt-d", "event_type": "ON_DELIVERY_ITEM_ADDED", "data": {
        "delivery_item": {"id": "di-1", "product_id": "458255405240287232", "quantity": 3},
        "customer": {"id": "c-3"}}}
    envelope = mapped(payload)
    assert envelope["data"]["deliveryItem"] == {"id": "di-1", "productId": "458255405240287232", "quantity": 3,
                                                "orderId": None}
    assert key_of(envelope) == "customer:c-3"


@pytest.mark.parametrize(("payload", "field"), [
    ({"event_type": "ON_REFUND", "data": {}}, "id"),
    ({"id": "e", "data": {}}, "event_type"),
    ({"id": "e", "event_type": "ON_ORDER_COMPLETED"}, "data"),
    ({"id": "e", "event_type": "ON_ORDER_COMPLETED", "data": {}}, "data.order"),
    ({"id": "e", "event_type": "ON_ORDER_COMPLETED", "data": {"order": {"id": "o", "lines": [{}]}}},
     "data.order.customer"),
    (order_payload(lines=[]), "data.order.lines"),
    (order_payload(lines=[{"product_id": "p", "quantity": 0}]), "data.order.lines[0].quantity"),
    (order_payload(lines=[{"product_id": "p", "quantity": 1.5}]), "data.order.lines[0].quantity"),
    (order_payload(lines=[{"product_id": "p", "quantity": 1}, {"quantity": 1}]), "data.order.lines[1].product_id"),
    ({"id": "e", "event_type": "ON_SUBSCRIPTION_ACTIVATED", "data": {"subscription": {
        "id": "s", "product_id": "p", "customer": {"id": "c"}}}}, "data.subscription.current_period_start"),
    ({"id": "e", "event_type": "ON_DELIVERY_ITEM_ADDED", "data": {"delivery_item": {
        "id": "d", "product_id": "p", "quantity": 1}}}, "data.customer"),
    ({"id": True, "event_type": "ON_REFUND", "data": {}}, "id"),
])
def test_unmappable_payloads_name_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        mapped(payload)
    assert info.value.field == field


@pytest.mark.parametrize("event_type", ["ON_SOMETHING", ["ON_REFUND"], {"a": 1}, 7])
def test_unknown_event_type_is_refused(event_type: object) -> None:
    with pytest.raises(PayloadError, match="unknown event type") as info:
        mapped({"id": "e", "event_type": event_type, "data": {}})
    assert info.value.field == "event_type"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_bodies_that_are_not_json_objects_are_refused(body: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        envelope_from_payload(body, timestamp_ms=TS, region="r")
    assert info.value.field == "body"


_KEYS = ["id", "event_type", "data", "order", "customer", "lines", "product_id", "quantity", "metadata", "uid",
         "subscription", "delivery_item", "current_period_start", "pretty_id", "email", "price", "order_id"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(payload=st.dictionaries(st.sampled_from(["id", "event_type", "data"]), _JSON),
       event_type=st.sampled_from(sorted(EVENT_TYPES)))
def test_any_json_maps_or_raises_payload_error_and_encodes(payload: dict[str, Any], event_type: str) -> None:
    payload = {"id": "evt", "event_type": event_type, **payload}
    try:
        envelope = mapped(payload)
    except PayloadError:
        return
    assert decode_envelope(encode_envelope(envelope))["eventId"] == envelope["eventId"]
