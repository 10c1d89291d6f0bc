"""An independent model of the ledger rules (DESIGN §4) that judges drills, the audit and property tests.

It reads PayNow deliveries as PayNow sends them (plain dicts) and shares no code with the pipeline or the schemas
package, so a wrong rule in either is caught rather than repeated. It is written as the rules read, per credit unit,
from the set of deliveries seen: pricing is the only thing that depends on when an order was first seen.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_UID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _valid_uid(uid: object) -> bool:
    """A Firebase-style uid that can be a Firestore document id (ids like `__x__` are reserved)."""
    return (isinstance(uid, str) and _UID.fullmatch(uid) is not None
            and not (len(uid) >= 4 and uid.startswith("__") and uid.endswith("__")))
_SUBSCRIPTION_TYPES = ("ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED")


@dataclass
class _Order:
    uid: str | None = None
    amount: int | None = None
    purchased: bool = False
    reversed: bool = False
    refunded: bool = False
    won: bool = False


@dataclass
class LedgerModel:
    """Feed it every accepted delivery (`add`), in the order processed; read the wallets and keys it implies.

    `catalog` maps a product id to its points (a product missing from it is unmapped); `customers` maps a PayNow
    customer id to a uid (a customer missing from it, without a uid in the checkout, is unmapped).
    """

    catalog: dict[str, int]
    customers: dict[str, str]
    _orders: dict[str, _Order] = field(default_factory=dict)
    _cycles: dict[str, tuple[str, int]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    _unmapped: dict[str, str] = field(default_factory=dict)
    _manual: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __init__(self, catalog: Mapping[str, int], customers: Mapping[str, str]) -> None:
        self.catalog = dict(catalog)
        self.customers = dict(customers)
        self._orders = {}
        self._cycles = {}
        self._seen = set()
        self._unmapped = {}
        self._manual = {}

    def set_points(self, product_id: str, points: int) -> None:
        """A catalog change from now on (orders already credited keep their amount)."""
        self.catalog[product_id] = points

    def add(self, delivery: Mapping[str, Any]) -> None:
        event_id = str(delivery["event_id"])
        if event_id in self._seen and event_id not in self._unmapped:
            return  # the same event again: nothing (a dead-lettered one may come back as a replay)
        self._unmapped.pop(event_id, None)
        event_type = delivery["event_type"]
        body: Mapping[str, Any] = delivery["body"]
        if event_type == "ON_ORDER_COMPLETED":
            self._order_completed(event_id, body)
        elif event_type == "ON_REFUND":
            if body.get("status") == "completed":
                order = self._orders.setdefault(body["order_id"], _Order())
                order.reversed = order.refunded = True
        elif event_type in ("ON_CHARGEBACK", "ON_CHARGEBACK_CLOSED"):
            order = self._orders.setdefault(body["order_id"], _Order())
            order.reversed = True
            if event_type == "ON_CHARGEBACK_CLOSED" and body.get("chargeback_status") == "won":
                order.won = True
        elif event_type in _SUBSCRIPTION_TYPES:
            self._cycle(event_id, body)
        self._seen.add(event_id)

    def credit(self, key: str, uid: str, points: int, order_id: str | None = None) -> None:
        """A manual credit (`paynow credit`): of an order, its purchase at `points` unless it was credited already
        (a later refund or chargeback reverses `points`); else a credit or debit once per `key`."""
        if order_id is None:
            self._manual.setdefault(f"manual:{key}", (uid, points))
            return
        order = self._orders.setdefault(order_id, _Order())
        if not order.purchased:
            order.uid, order.amount, order.purchased = uid, points, True

    def _uid(self, body: Mapping[str, Any]) -> str | None:
        checkout = body.get("checkout") or {}
        uid = (checkout.get("metadata") or {}).get("uid")
        if _valid_uid(uid):
            return str(uid)
        return self.customers.get(str((body.get("customer") or {}).get("id")))

    def _order_completed(self, event_id: str, body: Mapping[str, Any]) -> None:
        uid = self._uid(body)
        if uid is None:  # even a re-send of a credited order: an event nobody can attribute is dead-lettered
            self._unmapped[event_id] = "unmapped_customer"
            return
        order = self._orders.setdefault(body["id"], _Order())
        if order.purchased:
            return  # a re-send under another event id: priced and credited once
        credited = [line for line in body["lines"] if line.get("subscription_id") is None]
        missing = [line["product_id"] for line in credited if line["product_id"] not in self.catalog]
        if missing:
            self._unmapped[event_id] = "unmapped_product"
            return
        order.uid = uid
        order.amount = sum(self.catalog[line["product_id"]] * int(line["quantity"]) for line in credited)
        order.purchased = True

    def _cycle(self, event_id: str, body: Mapping[str, Any]) -> None:
        key = f"subscription:{body['id']}:{body['billing_cycle_sequence']}"
        uid = self._uid(body)
        if uid is None:
            self._unmapped[event_id] = "unmapped_customer"
        elif key in self._cycles:
            return
        elif body["product_id"] not in self.catalog:
            self._unmapped[event_id] = "unmapped_product"
        else:
            self._cycles[key] = (uid, self.catalog[body["product_id"]])

    def keys(self) -> dict[str, tuple[str, int]]:
        """The ledger keys the deliveries imply, with user and amount (zero amounts are not written); a pair of
        `reinstatement:`/`reinstatement-void:` keys that nets to zero may exist beside them (see below)."""
        keys = dict(self._cycles) | self._manual
        for order_id, order in self._orders.items():
            if not order.purchased:
                continue
            assert order.uid is not None and order.amount is not None
            due = {"purchase": order.amount}
            if order.reversed:
                due["reversal"] = -order.amount
                if order.won and not order.refunded:
                    due["reinstatement"] = order.amount
                # won and refunded: no net reinstatement. The ledger may hold `reinstatement:` and
                # `reinstatement-void:` (refund after the closing) or neither (refund first): `net` is the same.
            keys.update({f"{kind}:{order_id}": (order.uid, amount) for kind, amount in due.items() if amount})
        return keys

    def net(self, order_id: str) -> int:
        """What one order contributes to its user's wallet."""
        return sum(amount for key, (_, amount) in self.keys().items() if key.split(":", 1)[1] == order_id)

    def wallets(self) -> dict[str, int]:
        """uid -> paidBalance."""
        wallets: dict[str, int] = {}
        for uid, amount in self.keys().values():
            wallets[uid] = wallets.get(uid, 0) + amount
        return wallets

    def unmapped(self) -> dict[str, str]:
        """event_id -> the DLQ verdict the pipeline must give it (unmapped_customer / unmapped_product)."""
        return dict(self._unmapped)
