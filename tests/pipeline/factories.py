"""Real PayNow deliveries (schemas/deliveries.py), their envelopes and Pub/Sub messages for the pipeline tests."""
from __future__ import annotations

import time
from typing import Any

from pipeline.model import Message
from schemas import Envelope, deliveries, encode_envelope, envelope_attributes, envelope_from_payload, ordering_key

P20, P50, P150, P500 = "459935272365195264", "458255405240287232", "458255787102310400", "458256188073574400"
LEGACY = "321641745958305792"
BASIC_MONTHLY, PRO_MONTHLY = "458253675014389760", "458254106331451392"
BASIC_ANNUAL, PRO_ANNUAL = "458254569336479744", "458255036057649152"
POINTS = {P20: 20, P50: 50, P150: 150, P500: 500, LEGACY: 50, BASIC_MONTHLY: 50, PRO_MONTHLY: 150,
          BASIC_ANNUAL: 600, PRO_ANNUAL: 1800}
SUBSCRIPTIONS = (BASIC_MONTHLY, PRO_MONTHLY, BASIC_ANNUAL, PRO_ANNUAL)
Line = tuple[str, int] | tuple[str, int, str]
"""(productId, quantity) or (productId, quantity, subscriptionId)."""


def order(event_id: str, order_id: str, lines: list[Line], *, customer: str = "c1",
          uid: str | None = "u1") -> dict[str, Any]:
    """ON_ORDER_COMPLETED; a line with a third item belongs to that subscription."""
    built = [deliveries.order_line(f"{order_id}-l{n}", line[0], line[1],
                                   subscription_id=line[2] if len(line) > 2 else None)  # type: ignore[misc]
             for n, line in enumerate(lines)]
    return deliveries.order_completed(event_id, order_id, customer, built, uid=uid)


def refund(event_id: str, order_id: str, status: str = "completed", *, customer: str | None = None) -> dict[str, Any]:
    return deliveries.refund(event_id, f"rf-{order_id}", order_id, status, customer_id=customer)


def chargeback(event_id: str, order_id: str, chargeback_status: str = "pending", *, closed: bool = False,
               customer: str | None = None) -> dict[str, Any]:
    return deliveries.chargeback(event_id, f"pay-{order_id}", order_id, chargeback_status, closed=closed,
                                 customer_id=customer)


def cycle(event_id: str, sub_id: str, product_id: str, number: int, *, customer: str = "c1",
          uid: str | None = "u1", renewed: bool | None = None) -> dict[str, Any]:
    """ON_SUBSCRIPTION_ACTIVATED for cycle 1 (unless `renewed`), else ON_SUBSCRIPTION_RENEWED."""
    return deliveries.subscription_cycle(event_id, sub_id, product_id, number, customer, uid=uid,
                                         renewed=number > 1 if renewed is None else renewed)


def no_effect(event_type: str, event_id: str, **kwargs: Any) -> dict[str, Any]:
    return deliveries.no_effect(event_type, event_id, **kwargs)


def envelope(delivery: dict[str, Any], region: str = "us-central1") -> Envelope:
    return envelope_from_payload(deliveries.encode(delivery), timestamp_ms=int(time.time() * 1000), region=region)


def message(delivery: dict[str, Any], *, publish_time_ms: int | None = None, region: str = "us-central1") -> Message:
    env = envelope(delivery, region)
    return Message(encode_envelope(env), envelope_attributes(env), publish_time_ms or int(time.time() * 1000),
                   message_id=delivery["event_id"], ordering_key=ordering_key(env))


def raw_message(data: bytes, attributes: dict[str, str] | None = None) -> Message:
    return Message(data, attributes or {}, int(time.time() * 1000))
