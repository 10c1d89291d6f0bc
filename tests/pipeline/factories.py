"""PayNow payloads, envelopes and Pub/Sub messages for the pipeline tests."""
from __future__ import annotations

import json
import time
from typing import Any

from pipeline.model import Message
from schemas import Envelope, encode_envelope, envelope_attributes, envelope_from_payload, ordering_key

P20, P50, P150, P500 = "459935272365195264", "458255405240287232", "458255787102310400", "458256188073574400"
BASIC_MONTHLY, PRO_MONTHLY = "458253675014389760", "458254106331451392"
POINTS = {P20: 20, P50: 50, P150: 150, P500: 500, BASIC_MONTHLY: 50, PRO_MONTHLY: 150}


def _customer(customer_id: str, uid: str | None) -> dict[str, Any]:
    return {"id": customer_id, "email": f"{customer_id}@example.com", "metadata": {"uid": uid} if uid else {}}


def order(event_id: str, order_id: str, lines: list[tuple[str, int]], *, customer: str = "c1",
          uid: str | None = "u1", event_type: str = "ON_ORDER_COMPLETED") -> dict[str, Any]:
    return {"id": event_id, "event_type": event_type, "data": {"order": {
        "id": order_id, "pretty_id": f"PN-{order_id}", "customer": _customer(customer, uid),
        "lines": [{"product_id": p, "quantity": q, "price": "4.99"} for p, q in lines]}}}


def subscription(event_id: str, event_type: str, sub_id: str, product_id: str, period_start: str | None, *,
                 customer: str = "c1", uid: str | None = "u1") -> dict[str, Any]:
    sub = {"id": sub_id, "product_id": product_id, "customer": _customer(customer, uid), "status": "active"}
    if period_start:
        sub["current_period_start"] = period_start
    return {"id": event_id, "event_type": event_type, "data": {"subscription": sub}}


def delivery(event_id: str, item_id: str, product_id: str, quantity: int, *, order_id: str | None = None,
             customer: str = "c1", uid: str | None = "u1") -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "product_id": product_id, "quantity": quantity}
    if order_id:
        item["order_id"] = order_id
    return {"id": event_id, "event_type": "ON_DELIVERY_ITEM_ADDED",
            "data": {"delivery_item": item, "customer": _customer(customer, uid)}}


def envelope(payload: dict[str, Any], region: str = "us-central1") -> Envelope:
    return envelope_from_payload(json.dumps(payload).encode(), timestamp_ms=int(time.time() * 1000), region=region)


def message(payload: dict[str, Any], *, publish_time_ms: int | None = None, region: str = "us-central1") -> Message:
    env = envelope(payload, region)
    return Message(encode_envelope(env), envelope_attributes(env), publish_time_ms or int(time.time() * 1000),
                   message_id=payload["id"], ordering_key=ordering_key(env))


def raw_message(data: bytes, attributes: dict[str, str] | None = None) -> Message:
    return Message(data, attributes or {}, int(time.time() * 1000))
