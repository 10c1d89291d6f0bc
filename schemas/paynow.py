"""Map a PayNow webhook body to a v3 envelope, its ordering key and its Pub/Sub attributes."""
from __future__ import annotations

import decimal
import json
from typing import Any

from schemas.codec import CURRENT_VERSION, MIN_COMPATIBLE
from schemas.types import Envelope

ORDER_EVENTS = frozenset({"ON_ORDER_COMPLETED", "ON_REFUND", "ON_CHARGEBACK"})
SUBSCRIPTION_EVENTS = frozenset({
    "ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED", "ON_SUBSCRIPTION_CANCELED", "ON_SUBSCRIPTION_EXPIRED",
})
CREDITED_SUBSCRIPTION_EVENTS = frozenset({"ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED"})
EVENT_TYPES = ORDER_EVENTS | SUBSCRIPTION_EVENTS | {"ON_DELIVERY_ITEM_ADDED"}
MAX_QUANTITY = 10_000


class PayloadError(ValueError):
    """A PayNow body that cannot be mapped; `field` is the JSON path at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(obj: dict[str, Any], key: str, path: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise PayloadError(_path(path, key), "missing")
    return value


def _obj(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = _get(obj, key, path)
    if not isinstance(value, dict):
        raise PayloadError(_path(path, key), "must be an object")
    return value


def _id(obj: dict[str, Any], key: str, path: str) -> str:
    """PayNow ids arrive as strings or as JSON numbers; both become strings."""
    value = _get(obj, key, path)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise PayloadError(_path(path, key), "must be a non-empty string or integer id")
    if len(str(value)) > 200:
        raise PayloadError(_path(path, key), "longer than 200 characters")
    return str(value)


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return None if value is None else str(value)


def _quantity(obj: dict[str, Any], path: str) -> int:
    value = _get(obj, "quantity", path)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUANTITY:
        raise PayloadError(f"{path}.quantity", f"must be an integer from 1 to {MAX_QUANTITY}")
    return value


def _customer(obj: dict[str, Any], path: str) -> dict[str, Any]:
    customer = _obj(obj, "customer", path)
    metadata = customer.get("metadata") or {}
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return {
        "id": _id(customer, "id", f"{path}.customer"),
        "email": _opt_str(customer, "email"),
        "uid": str(uid) if uid not in (None, "") else None,
    }


def _lines(order: dict[str, Any]) -> list[dict[str, Any]]:
    lines = _get(order, "lines", "data.order")
    if not isinstance(lines, list) or not lines:
        raise PayloadError("data.order.lines", "must be a non-empty array")
    mapped = []
    for i, line in enumerate(lines):
        path = f"data.order.lines[{i}]"
        if not isinstance(line, dict):
            raise PayloadError(path, "must be an object")
        mapped.append({"productId": _id(line, "product_id", path), "quantity": _quantity(line, path),
                       "price": _opt_str(line, "price")})
    return mapped


def _data(event_type: str, data: dict[str, Any], raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"orderId": None, "prettyId": None, "lines": [], "subscription": None,
                           "deliveryItem": None, "rawPayload": raw}
    order = data.get("order")
    if event_type in ORDER_EVENTS or order is not None:
        order = _obj(data, "order", "data")
        out["orderId"] = _id(order, "id", "data.order")
        out["prettyId"] = _opt_str(order, "pretty_id")
        out["customer"] = _customer(order, "data.order")
        out["lines"] = _lines(order)
    if event_type in SUBSCRIPTION_EVENTS:
        sub = _obj(data, "subscription", "data")
        if event_type in CREDITED_SUBSCRIPTION_EVENTS:
            _get(sub, "current_period_start", "data.subscription")
        out["subscription"] = {
            "id": _id(sub, "id", "data.subscription"),
            "productId": _id(sub, "product_id", "data.subscription"),
            "periodStart": _opt_str(sub, "current_period_start"),
            "status": _opt_str(sub, "status"),
        }
        out.setdefault("customer", _customer(sub, "data.subscription"))
    if event_type == "ON_DELIVERY_ITEM_ADDED":
        item = _obj(data, "delivery_item", "data")
        out["deliveryItem"] = {
            "id": _id(item, "id", "data.delivery_item"),
            "productId": _id(item, "product_id", "data.delivery_item"),
            "quantity": _quantity(item, "data.delivery_item"),
            "orderId": _opt_str(item, "order_id"),
        }
        if "customer" not in out:
            out["customer"] = _customer(data, "data")
    return out


def envelope_from_payload(body: bytes, *, timestamp_ms: int, region: str) -> Envelope:
    """Map a raw PayNow JSON body to a v3 envelope, or raise PayloadError naming the offending field."""
    try:
        payload = json.loads(body, parse_float=decimal.Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("body", f"not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise PayloadError("body", "must be a JSON object")
    event_id = _id(payload, "id", "")
    event_type = _get(payload, "event_type", "")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise PayloadError("event_type", f"unknown event type {str(event_type)[:64]!r}")
    data = _obj(payload, "data", "")
    return {
        "version": CURRENT_VERSION,
        "minCompatible": MIN_COMPATIBLE,
        "eventId": event_id,
        "eventType": event_type,
        "timestamp": timestamp_ms,
        "region": region,
        "data": _data(event_type, data, body),
    }


def ordering_key(envelope: Envelope) -> str:
    """`uid:{uid}` when the payload names the user, else `customer:{paynowCustomerId}`."""
    customer = envelope["data"]["customer"]
    return f"uid:{customer['uid']}" if customer.get("uid") else f"customer:{customer['id']}"


def envelope_attributes(envelope: Envelope) -> dict[str, str]:
    """Pub/Sub attributes that let routing and inspection work without decoding the body."""
    return {
        "version": str(envelope["version"]),
        "eventId": envelope["eventId"],
        "eventType": envelope["eventType"],
        "region": envelope["region"],
    }
