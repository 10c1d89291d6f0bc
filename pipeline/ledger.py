"""Pure ledger rules (DESIGN §4): one envelope + the product catalog + a uid -> the writes of that event."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import Envelope

ORDER_CREDIT = "ON_ORDER_COMPLETED"
REVERSALS = frozenset({"ON_REFUND", "ON_CHARGEBACK"})
SUBSCRIPTION_CREDITS = frozenset({"ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED"})
RECORDED_ONLY = frozenset({"ON_SUBSCRIPTION_CANCELED", "ON_SUBSCRIPTION_EXPIRED"})
DELIVERY = "ON_DELIVERY_ITEM_ADDED"
SOURCE = "paynow"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Product:
    points: int
    kind: str = "one_time"
    active: bool = True

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Product:
        points = doc.get("points")
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise ValueError(f"product points must be a non-negative integer, got {points!r}")
        return cls(points, str(doc.get("kind", "one_time")), bool(doc.get("active", True)))


class UnmappedProduct(LookupError):
    """The event names a product the catalog does not know (or, for a credit, one that is inactive)."""

    def __init__(self, product_id: str, problem: str = "unknown") -> None:
        super().__init__(f"product {product_id} is {problem}")
        self.product_id = product_id


class InvalidEvent(ValueError):
    """An envelope that decodes but cannot be turned into ledger writes (e.g. an unreadable billing period)."""


@dataclass(frozen=True)
class EventWrites:
    """Everything one event writes: ledger entries keyed by business key, and its status if all are new."""

    event_id: str
    event_type: str
    uid: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def delta(self, entry_ids: list[str] | None = None) -> int:
        """The wallet change for the given entries (all of them by default)."""
        ids = self.entries if entry_ids is None else entry_ids
        return sum(int(self.entries[i]["amount"]) for i in ids)


def billing_period(period_start: str | None) -> str:
    """The YYYY-MM-DD date of a billing period start (ISO-8601 text or epoch seconds/milliseconds), in UTC."""
    if period_start is None or not str(period_start).strip():
        raise InvalidEvent("subscription.periodStart is missing")
    text = str(period_start).strip()
    if text.isdigit():
        seconds = int(text) / 1000 if len(text) > 11 else int(text)
        return dt.datetime.fromtimestamp(seconds, dt.UTC).date().isoformat()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        if _DATE_RE.match(text):
            return text[:10]
        raise InvalidEvent(f"subscription.periodStart {text[:40]!r} is not a date") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC)
    return parsed.date().isoformat()


def _points(products: Mapping[str, Product], product_id: str, *, credit: bool) -> int:
    product = products.get(product_id)
    if product is None:
        raise UnmappedProduct(product_id)
    # A retired product is never credited, but a sale made while it was active can still be reversed.
    if credit and not product.active:
        raise UnmappedProduct(product_id, "inactive")
    return product.points


def _entry(envelope: Envelope, amount: int, kind: str, **ids: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"amount": amount, "kind": kind, "source": SOURCE, "eventId": envelope["eventId"],
                             "eventType": envelope["eventType"], "region": envelope.get("region") or "unknown"}
    entry.update({k: v for k, v in ids.items() if v is not None})
    return entry


def _order_entries(envelope: Envelope, products: Mapping[str, Product], *, reversal: bool) -> dict[str, Any]:
    data = envelope["data"]
    order_id = data.get("orderId")
    if not order_id:
        raise InvalidEvent(f"{envelope['eventType']} without an order id")
    prefix, kind, sign = ("reversal", "reversal", -1) if reversal else ("purchase", "purchase", 1)
    entries = {}
    for index, line in enumerate(data.get("lines") or []):
        amount = sign * _points(products, line["productId"], credit=not reversal) * int(line["quantity"])
        entries[f"{prefix}:{order_id}:{index}"] = _entry(envelope, amount, kind, orderId=order_id,
                                                          productId=line["productId"])
    if not entries:
        raise InvalidEvent(f"{envelope['eventType']} for order {order_id} has no lines")
    return entries


def _subscription_entries(envelope: Envelope, products: Mapping[str, Product]) -> dict[str, Any]:
    sub = envelope["data"].get("subscription")
    if not sub:
        raise InvalidEvent(f"{envelope['eventType']} without a subscription")
    period = billing_period(sub.get("periodStart"))
    amount = _points(products, sub["productId"], credit=True)
    return {f"subscription:{sub['id']}:{period}": _entry(envelope, amount, "subscription", subscriptionId=sub["id"],
                                                          productId=sub["productId"])}


def _delivery_entries(envelope: Envelope, products: Mapping[str, Product]) -> dict[str, Any]:
    item = envelope["data"].get("deliveryItem")
    if not item:
        raise InvalidEvent("ON_DELIVERY_ITEM_ADDED without a delivery item")
    if item.get("orderId"):
        return {}  # the order credits it: recorded only
    amount = _points(products, item["productId"], credit=True) * int(item["quantity"])
    return {f"delivery:{item['id']}": _entry(envelope, amount, "delivery", productId=item["productId"])}


def plan_event(envelope: Envelope, products: Mapping[str, Product], uid: str) -> EventWrites:
    """The ledger entries one event creates if none of its business keys exist yet.

    Raises UnmappedProduct or InvalidEvent; never touches Firestore.
    """
    event_type = envelope["eventType"]
    if event_type == ORDER_CREDIT:
        entries = _order_entries(envelope, products, reversal=False)
    elif event_type in REVERSALS:
        entries = _order_entries(envelope, products, reversal=True)
    elif event_type in SUBSCRIPTION_CREDITS:
        entries = _subscription_entries(envelope, products)
    elif event_type == DELIVERY:
        entries = _delivery_entries(envelope, products)
    elif event_type in RECORDED_ONLY:
        entries = {}
    else:
        raise InvalidEvent(f"unknown event type {event_type!r}")
    return EventWrites(envelope["eventId"], event_type, uid, entries)


def event_document(envelope: Envelope, writes: EventWrites, entry_ids: list[str], *, ordering_key: str,
                   worker_region: str, published_at: dt.datetime, processed_at: Any,
                   expires_at: dt.datetime) -> dict[str, Any]:
    """The `webhookEvents/{eventId}` document for the entries this commit creates.

    Status: `recorded` (nothing to credit), `applied` (at least one new entry), or `duplicate_business_key`
    (every entry already existed under another event id).
    """
    if not writes.entries:
        status = "recorded"
    elif entry_ids:
        status = "applied"
    else:
        status = "duplicate_business_key"
    return {
        "eventId": writes.event_id, "eventType": writes.event_type, "region": envelope.get("region") or "unknown",
        "workerRegion": worker_region, "status": status, "uid": writes.uid, "orderingKey": ordering_key,
        "entryIds": list(entry_ids), "publishedAt": published_at, "processedAt": processed_at,
        "expiresAt": expires_at,
        "receivedAt": dt.datetime.fromtimestamp(int(envelope["timestamp"]) / 1000, dt.UTC),
    }
