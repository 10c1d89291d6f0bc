"""Pure ledger rules (ledger spec, DESIGN §4): envelope + catalog + uid + order aggregate -> the writes of one event."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from schemas import Envelope
from schemas.attributes import PUSH_SOURCE, RECONCILE_SOURCE
from schemas.paynow import ID_RE

ORDER = "ON_ORDER_COMPLETED"
REFUND = "ON_REFUND"
CHARGEBACK = "ON_CHARGEBACK"
CHARGEBACK_CLOSED = "ON_CHARGEBACK_CLOSED"
SUBSCRIPTION = "SUBSCRIPTION"
IGNORED = "IGNORED"
SUBSCRIPTION_CREDITS = frozenset({"ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED"})
ORDER_CLASSES = frozenset({ORDER, REFUND, CHARGEBACK, CHARGEBACK_CLOSED})
"""Event classes that act on the order aggregate `orders/{orderId}`."""
SOURCE = "paynow"

PURCHASE, REVERSAL, REINSTATEMENT, VOID = "purchase", "reversal", "reinstatement", "reinstatement-void"


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
    """The event names a product missing from the catalog (an inactive one is still priced)."""

    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id} is not in the catalog")
        self.product_id = product_id


class InvalidEvent(ValueError):
    """An envelope that decodes but cannot be applied (no order id, a pre-v4 cycle event without its cycle)."""


def valid_id(value: object) -> bool:
    """Whether `value` may become a Firestore path segment (a string of `ID_RE`, the mapping's own pattern,
    checked again here: an envelope may come from an older ingress, a replay or a legacy producer)."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def event_class(envelope: Envelope) -> str:
    """ORDER, REFUND, CHARGEBACK, CHARGEBACK_CLOSED, SUBSCRIPTION or IGNORED; InvalidEvent if it cannot be applied."""
    event_type: str = envelope["eventType"]
    data = envelope["data"]
    if not valid_id(envelope.get("eventId")):
        raise InvalidEvent(f"{event_type} without a valid event id")
    if event_type in ORDER_CLASSES:
        if not valid_id(data.get("orderId")):
            raise InvalidEvent(f"{event_type} without a valid order id")
        return event_type
    if event_type in SUBSCRIPTION_CREDITS:
        sub = data.get("subscription")
        if not sub or not valid_id(sub.get("id")):
            raise InvalidEvent(f"{event_type} without a valid subscription id")
        if sub.get("cycle") is None:
            raise InvalidEvent(f"{event_type} has no billing_cycle_sequence (a pre-v4 envelope)")
        return SUBSCRIPTION
    return IGNORED


def needs_uid(envelope: Envelope) -> bool:
    """Only credit units (orders, subscription cycles) need a user; reversals use their order's."""
    try:
        return event_class(envelope) in (ORDER, SUBSCRIPTION)
    except InvalidEvent:
        return False  # ApplyToLedger dead-letters it as drop_malformed; no lookup first


def acts_on_order(envelope: Envelope, cls: str) -> bool:
    """Whether an event of class `cls` reads and may write its order aggregate (an ignored refund does not)."""
    return cls in ORDER_CLASSES and (cls != REFUND or _refund_completed(envelope)[0])


def order_id(envelope: Envelope) -> str | None:
    """The order an ORDER/REFUND/CHARGEBACK(_CLOSED) event acts on."""
    value = envelope["data"].get("orderId")
    return str(value) if value else None


def subscription_key(envelope: Envelope) -> str:
    sub = envelope["data"]["subscription"]
    return f"subscription:{sub['id']}:{int(sub['cycle'])}"


def order_key(kind: str, order: str) -> str:
    return f"{kind}:{order}"


@dataclass(frozen=True)
class OrderAggregate:
    """`orders/{orderId}`: what has been seen of an order and which of its entries were written."""

    uid: str | None = None
    amount: int | None = None
    purchased: bool = False
    reversal_cause: bool = False
    refunded: bool = False
    won: bool = False
    entries: tuple[str, ...] = ()

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OrderAggregate:
        amount = doc.get("amount")
        return cls(uid=doc.get("uid"), amount=None if amount is None else int(amount),
                   purchased=bool(doc.get("purchased")), reversal_cause=bool(doc.get("reversalCause")),
                   refunded=bool(doc.get("refunded")), won=bool(doc.get("won")),
                   entries=tuple(doc.get("entries") or ()))

    def to_doc(self) -> dict[str, Any]:
        """The stored fields (`updatedAt` is the commit's server time, set by the sink)."""
        return {"uid": self.uid, "amount": self.amount, "purchased": self.purchased,
                "reversalCause": self.reversal_cause, "refunded": self.refunded, "won": self.won,
                "entries": list(self.entries)}


@dataclass(frozen=True)
class Decision:
    """What one event writes.

    status: applied (>= 1 entry), recorded (aggregate changed, no entry), ignored (+reason) or
    duplicate_business_key (nothing new). `aggregate` is the new `orders/{orderId}` to write (None: no write),
    `entries` the new ledger entries by key, all for `uid`.
    """

    status: str
    uid: str | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_id: str | None = None
    aggregate: OrderAggregate | None = None
    reason: str = ""

    def delta(self) -> int:
        return sum(int(e["amount"]) for e in self.entries.values())

    def as_duplicate(self) -> Decision:
        """A subscription cycle whose key is already claimed: only its event doc is written."""
        return replace(self, status="duplicate_business_key", entries={})


def _points(products: Mapping[str, Product], product_id: str) -> int:
    product = products.get(product_id)
    if product is None:
        raise UnmappedProduct(product_id)
    return product.points  # a retired (inactive) product is still credited: PayNow sold it


def order_amount(envelope: Envelope, products: Mapping[str, Product]) -> tuple[int, list[dict[str, Any]]]:
    """A = sum of points * quantity over the lines that are not a subscription's, and those lines' detail."""
    lines = []
    for line in envelope["data"].get("lines") or []:
        if line.get("subscriptionId"):
            continue  # its subscription's cycle events credit it
        quantity = int(line["quantity"])
        if quantity < 1:
            raise InvalidEvent(f"order line {line.get('lineId')} has quantity {quantity}")
        lines.append({"productId": line["productId"], "quantity": quantity,
                      "points": _points(products, line["productId"])})
    return sum(x["points"] * x["quantity"] for x in lines), lines


def _entry(envelope: Envelope, amount: int, kind: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"amount": amount, "kind": kind, "source": SOURCE, "eventId": envelope["eventId"],
                             "eventType": envelope["eventType"], "region": envelope.get("region") or "unknown"}
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry


def _ignored(reason: str) -> Decision:
    return Decision("ignored", reason=reason)


def _refund_completed(envelope: Envelope) -> tuple[bool, str | None]:
    refund = envelope["data"].get("refund")
    if refund is None:  # a pre-v4 refund: the old contract's refunds were completed ones
        return True, None
    status = refund.get("status")
    return status == "completed", status


def decide(envelope: Envelope, products: Mapping[str, Product], uid: str | None,
           aggregate: OrderAggregate | None) -> Decision:
    """The writes of one event given the current order aggregate (None if `orders/{orderId}` does not exist).

    Raises UnmappedProduct (a purchase priced for the first time names a product missing from the catalog) or
    InvalidEvent. Never touches Firestore. For a subscription cycle the decision assumes its key is unclaimed;
    the sink turns it into `as_duplicate()` when the claim exists.
    """
    cls = event_class(envelope)
    if cls == IGNORED:
        return _ignored(f"{envelope['eventType']} has no ledger effect")
    if cls == SUBSCRIPTION:
        if not valid_id(uid):
            raise InvalidEvent("a subscription cycle needs a resolved uid")
        sub = envelope["data"]["subscription"]
        key = subscription_key(envelope)
        entry = _entry(envelope, _points(products, sub["productId"]), "subscription", subscriptionId=sub["id"],
                       cycle=int(sub["cycle"]))
        return Decision("applied", uid=uid, entries={key: entry})
    if cls == REFUND:
        completed, status = _refund_completed(envelope)
        if not completed:
            return _ignored(f"refund status {status!r} is not completed")
    return _order_decision(cls, envelope, products, uid, aggregate)


def _order_decision(cls: str, envelope: Envelope, products: Mapping[str, Product], uid: str | None,
                    aggregate: OrderAggregate | None) -> Decision:
    order = str(envelope["data"]["orderId"])
    old = aggregate or OrderAggregate()
    new = old
    lines: list[dict[str, Any]] = []
    if cls == ORDER and not old.purchased:
        if not valid_id(uid):
            raise InvalidEvent("an order needs a resolved uid")
        amount, lines = order_amount(envelope, products)  # priced once, here; never again
        new = replace(new, purchased=True, uid=uid, amount=amount)
    elif cls == REFUND:
        new = replace(new, reversal_cause=True, refunded=True)
    elif cls == CHARGEBACK:
        new = replace(new, reversal_cause=True)
    elif cls == CHARGEBACK_CLOSED:
        chargeback = envelope["data"].get("chargeback") or {}
        new = replace(new, reversal_cause=True, won=new.won or chargeback.get("chargebackStatus") == "won")
    due = _due_entries(new)
    new = replace(new, entries=new.entries + tuple(order_key(kind, order) for kind, _ in due))
    entries = {}
    for kind, amount in due:
        extra: dict[str, Any] = {"orderId": order}
        if kind == PURCHASE:
            extra["lines"] = lines
        entries[order_key(kind, order)] = _entry(envelope, amount, kind, **extra)
    if new == old and aggregate is not None:
        return Decision("duplicate_business_key", uid=old.uid, order_id=order)
    status = "applied" if entries else "recorded"
    return Decision(status, uid=new.uid, entries=entries, order_id=order, aggregate=new)


def _due_entries(agg: OrderAggregate) -> list[tuple[str, int]]:
    """The entries the flags call for that are not yet written; none of amount 0 (an order of subscriptions)."""
    if not agg.purchased or not agg.amount:
        return []
    amount = agg.amount
    written = {key.rsplit(":", 1)[0] for key in agg.entries}
    due = []
    if PURCHASE not in written:
        due.append((PURCHASE, amount))
    if agg.reversal_cause and REVERSAL not in written:
        due.append((REVERSAL, -amount))
    if agg.reversal_cause and agg.won and not agg.refunded and REINSTATEMENT not in written:
        due.append((REINSTATEMENT, amount))
    if REINSTATEMENT in written and agg.refunded and VOID not in written:
        due.append((VOID, -amount))  # a refund after the reinstatement: the store gave the money back
    return due


def event_document(envelope: Envelope, decision: Decision, *, ordering_key: str, worker_region: str,
                   published_at: dt.datetime, expires_at: dt.datetime, source: str = PUSH_SOURCE) -> dict[str, Any]:
    """The `webhookEvents/{eventId}` document (`processedAt` is the commit's server time, set by the sink).

    `source` says how the event reached the topic: PayNow's push through the ingress, or the reconciler.
    """
    doc: dict[str, Any] = {"source": RECONCILE_SOURCE if source == RECONCILE_SOURCE else PUSH_SOURCE,
        "eventId": envelope["eventId"], "eventType": envelope["eventType"],
        "region": envelope.get("region") or "unknown", "workerRegion": worker_region, "status": decision.status,
        "uid": decision.uid, "orderingKey": ordering_key, "entryIds": list(decision.entries),
        "publishedAt": published_at, "expiresAt": expires_at,
        "receivedAt": dt.datetime.fromtimestamp(int(envelope["timestamp"]) / 1000, dt.UTC),
    }
    if decision.order_id:
        doc["orderId"] = decision.order_id
    if decision.reason:
        doc["reason"] = decision.reason
    return doc
