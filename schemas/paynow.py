"""Map a real PayNow delivery (`{event_type, event_id, body}`) to a v4 envelope, its ordering key and attributes.

The wire contract is PayNow's published webhook definitions (schemas/vendor/paynow/webhook-definitions.json).
Only what the ledger needs is validated here (DESIGN §1): the top level for every type, and for the types that
change the ledger the fields §4 reads, with the types the definitions give them. Every refusal names the field.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from schemas import attributes, personal
from schemas.codec import CURRENT_VERSION, MIN_COMPATIBLE
from schemas.types import Envelope

ORDER_COMPLETED = "ON_ORDER_COMPLETED"
REFUND = "ON_REFUND"
CHARGEBACK = "ON_CHARGEBACK"
CHARGEBACK_CLOSED = "ON_CHARGEBACK_CLOSED"
SUBSCRIPTION_CREDITS = frozenset({"ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED"})
CHARGEBACKS = frozenset({CHARGEBACK, CHARGEBACK_CLOSED})
LEDGER_EVENTS = frozenset({ORDER_COMPLETED, REFUND}) | CHARGEBACKS | SUBSCRIPTION_CREDITS
"""The types whose fields the ingress validates; every other type is published as it is (DESIGN §1)."""

EVENT_TYPES = frozenset({
    "ON_ORDER_COMPLETED", "ON_REFUND", "ON_CHARGEBACK", "ON_CHARGEBACK_CLOSED", "ON_DELIVERY_ITEM_ADDED",
    "ON_DELIVERY_ITEM_ACTIVATED", "ON_DELIVERY_ITEM_USED", "ON_DELIVERY_ITEM_REVOKED", "ON_DELIVERY_ITEM_EXPIRED",
    "ON_DELIVERY_ITEM_RENEWED", "ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED", "ON_SUBSCRIPTION_CANCELED",
    "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT", "ON_CONNECTED_USER_REGISTERED", "ON_CONNECTED_USER_BECAME_PAYABLE",
    "ON_CONNECTED_USER_BECAME_UNPAYABLE", "ON_CONNECTED_USER_PAYOUT_CREATED", "ON_CONNECTED_USER_PAYOUT_COMPLETED",
    "ON_CONNECTED_USER_TRANSACTION_INSERTED", "ON_CONNECTED_USER_TRUST_STATUS_CHANGED", "ON_TRIAL_ACTIVATED",
    "ON_TRIAL_COMPLETED", "ON_TRIAL_CANCELED", "ON_PURCHASE_FOLLOW_UP_ATTEMPT_EMAIL_SENT",
    "ON_PURCHASE_FOLLOW_UP_ATTEMPT_SUCCEEDED", "ON_ABANDONED_CHECKOUT_RECOVERY_ATTEMPT_EMAIL_SENT",
    "ON_ABANDONED_CHECKOUT_RECOVERY_ATTEMPT_SUCCEEDED", "ON_PAYMENT_COMPLETED", "ON_PAYMENT_FAILED",
})
"""PayNow's `WebhookEventType` enum (tests check it against the definitions). Unknown types are accepted too."""

EVENT_TYPE_RE = re.compile(r"^[A-Z_]{1,64}$")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
"""A run of 19 digits (after every digit became 0): where an integer may fall outside 64 bits, which orjson would
turn into a float. A translate and a substring search: 2 us on a 2.3 KB order, where the regex `[0-9]{19}` took 26
(it tries the pattern at every position), on every webhook."""
ID_RE = re.compile(r"^(?!__.*__$)[A-Za-z0-9_-]{1,128}$")
"""PayNow ids are flake ids (digits); anything that may become a Firestore path segment must match this whole
(`fullmatch`: `$` alone lets a trailing newline through): a valid document id, and Firestore reserves `__.*__`.
Also the OpenAPI pattern of ids, so ECMA-262 syntax only."""
UID_RE = ID_RE
"""A Firebase-style uid (DESIGN §4) that can be a document id; a `checkout.metadata.uid` that is not one is
ignored, never trusted (the customer's mapping decides)."""
MAX_QUANTITY = 10_000
MAX_CENTS = 2**63 - 1


class PayloadError(ValueError):
    """A PayNow delivery that cannot be mapped; `field` is the JSON path at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_delivery(raw: bytes) -> dict[str, Any]:
    """The JSON object of a delivery, or PayloadError: bad UTF-8, bad JSON, too deep, huge numbers, not an object.

    orjson parses (a third of the standard library's time on a 2 KB delivery); whatever it refuses goes to the
    standard library, which decides as before: it takes a lone surrogate escape (JavaScript's JSON.stringify writes
    one for a cut emoji) in a field the ledger never reads, where refusing would lose the payment, and NaN or huge
    numbers, which the field checks then name. orjson reads an integer outside 64 bits as a float, which would
    change the stored copy, so a body with a run of 19 digits (flake ids have 18 today) goes to the standard
    library too.
    """
    if _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO):
        payload = _parse_with_json(raw)
    else:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = _parse_with_json(raw)
    if not isinstance(payload, dict):
        raise PayloadError("body", "must be a JSON object")
    return payload


def _parse_with_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise PayloadError("body", "nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # includes int-too-long (PEP 651's str digits limit)
        raise PayloadError("body", f"not valid JSON ({str(exc)[:120]})") from None


class _Reader:
    """Typed getters over one JSON object at `path`; each failure names the exact field."""

    def __init__(self, obj: dict[str, Any], path: str) -> None:
        self.obj = obj
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def value(self, key: str, *, required: bool) -> Any:
        value = self.obj.get(key)
        if value is None and required:
            raise PayloadError(self.at(key), "missing" if key not in self.obj else "must not be null")
        return value

    def text(self, key: str, *, required: bool = True, pattern: re.Pattern[str] | None = None,
             max_len: int = 256) -> str | None:
        value = self.value(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise PayloadError(self.at(key), f"must be a string, got {_json_type(value)}")
        if not value.isprintable() or not _utf8(value):
            raise PayloadError(self.at(key), "holds control characters or unpaired surrogates")
        if len(value) > max_len:
            raise PayloadError(self.at(key), f"longer than {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise PayloadError(self.at(key), f"must match {pattern.pattern}")
        return value

    def ident(self, key: str, *, required: bool = True) -> str | None:
        return self.text(key, required=required, pattern=ID_RE)

    def integer(self, key: str, *, required: bool = True, low: int = -MAX_CENTS, high: int = MAX_CENTS) -> int | None:
        value = self.value(key, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise PayloadError(self.at(key), f"must be an integer, got {_json_type(value)}")
        if not low <= value <= high:
            raise PayloadError(self.at(key), f"must be between {low} and {high}")
        return value

    def child(self, key: str, *, required: bool = True) -> _Reader | None:
        value = self.value(key, required=required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise PayloadError(self.at(key), f"must be an object, got {_json_type(value)}")
        return _Reader(value, self.at(key))

    def items(self, key: str) -> list[_Reader]:
        value = self.value(key, required=True)
        if not isinstance(value, list):
            raise PayloadError(self.at(key), f"must be an array, got {_json_type(value)}")
        readers = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise PayloadError(f"{self.at(key)}[{i}]", f"must be an object, got {_json_type(item)}")
            readers.append(_Reader(item, f"{self.at(key)}[{i}]"))
        return readers


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _uid(body: _Reader) -> str | None:
    """checkout.metadata.uid when it is a valid uid; the definitions type metadata as a free-form object."""
    checkout = body.obj.get("checkout")
    metadata = checkout.get("metadata") if isinstance(checkout, dict) else None
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return uid if isinstance(uid, str) and UID_RE.fullmatch(uid) else None


def _customer(body: _Reader, *, required: bool) -> dict[str, Any] | None:
    """The pseudonymous ids of the customer; `email` stays null (v2-v4 readers expect the field; nothing reads it)."""
    customer = body.child("customer", required=required)
    if customer is None:
        return None
    return {"id": customer.ident("id"), "uid": _uid(body), "email": None}


def _lines(body: _Reader) -> list[dict[str, Any]]:
    return [{
        "productId": line.ident("product_id"),
        "quantity": line.integer("quantity", low=1, high=MAX_QUANTITY),
        "lineId": line.ident("id", required=False),
        "subscriptionId": line.ident("subscription_id", required=False),
        "totalCents": line.integer("total_amount", required=False),
    } for line in body.items("lines")]


def _empty_data() -> dict[str, Any]:
    return {"orderId": None, "customer": None, "lines": [], "subscription": None, "refund": None,
            "chargeback": None, "totalCents": None, "currency": None, "rawPayload": b""}


def _ledger_data(event_type: str, body: _Reader) -> dict[str, Any]:
    """The fields §4 needs, validated, for a type that changes the ledger."""
    data = _empty_data()
    if event_type == ORDER_COMPLETED:
        data.update(orderId=body.ident("id"), customer=_customer(body, required=True), lines=_lines(body),
                    totalCents=body.integer("total_amount"), currency=body.text("currency", max_len=8))
    elif event_type == REFUND:
        data.update(orderId=body.ident("order_id"), customer=_customer(body, required=False),
                    refund={"id": body.ident("id"), "status": body.text("status", max_len=32),
                            "amountCents": body.integer("amount")},
                    currency=body.text("currency", max_len=8))
    elif event_type in CHARGEBACKS:
        data.update(orderId=body.ident("order_id"), customer=_customer(body, required=False),
                    chargeback={"paymentId": body.ident("id"), "status": body.text("status", max_len=32),
                                "chargebackStatus": body.text("chargeback_status", max_len=32),
                                "amountCents": body.integer("amount")},
                    currency=body.text("currency", max_len=8))
    else:  # a subscription cycle
        data.update(customer=_customer(body, required=True),
                    subscription={"id": body.ident("id"), "productId": body.ident("product_id"),
                                  "cycle": body.integer("billing_cycle_sequence", low=0, high=2**31 - 1),
                                  "status": body.text("status", required=False, max_len=32),
                                  "totalCents": body.integer("total_amount")},
                    totalCents=body.integer("total_amount"), currency=body.text("currency", max_len=8))
    return data


def _other_data(body: dict[str, Any]) -> dict[str, Any]:
    """Best-effort ids of a type the ledger ignores: nothing here may refuse the delivery (PayNow would retry)."""
    data = _empty_data()
    order_id = body.get("order_id")
    data["orderId"] = order_id if isinstance(order_id, str) and ID_RE.fullmatch(order_id) else None
    customer = body.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else None
    if isinstance(customer_id, str) and ID_RE.fullmatch(customer_id):
        data["customer"] = {"id": customer_id, "uid": _uid(_Reader(body, "body")), "email": None}
    return data


def envelope_from_payload(raw: bytes, *, timestamp_ms: int, region: str) -> Envelope:
    """Map a raw PayNow delivery to a v4 envelope, or raise PayloadError naming the offending field.

    `rawPayload` is the delivery without its personal fields (schemas/personal.py), as compact JSON.
    """
    delivery = parse_delivery(raw)
    top = _Reader(delivery, "")
    event_type = top.text("event_type", pattern=EVENT_TYPE_RE, max_len=64)
    event_id = top.ident("event_id")
    body = top.child("body")
    assert event_type is not None and event_id is not None and body is not None
    data = _ledger_data(event_type, body) if event_type in LEDGER_EVENTS else _other_data(body.obj)
    data["rawPayload"] = minimised(delivery)
    return {"version": CURRENT_VERSION, "minCompatible": MIN_COMPATIBLE, "eventId": event_id,
            "eventType": event_type, "timestamp": timestamp_ms, "region": region, "data": data}


MAX_DEPTH = 255
"""The deepest delivery stored (orjson's limit); deeper is a 400, never a 5xx or a recursion on the way."""


def minimised(delivery: dict[str, Any]) -> bytes:
    """The parsed delivery without its personal fields, as compact JSON (orjson: about a tenth of `json.dumps`'s
    CPU on the request path). It strips `delivery` in place: call it once the envelope's fields are read from it.
    """
    stripped = personal.strip(delivery)
    try:
        return orjson.dumps(stripped)
    except orjson.JSONEncodeError as exc:
        if "recursion" in str(exc).lower():  # orjson stops at 255 levels; no PayNow definition nests past ten
            raise PayloadError("body", f"nested deeper than {MAX_DEPTH} levels") from None
        # an integer past 64 bits or a lone surrogate: json's encoder takes both (and the depth is bounded above)
        return json.dumps(stripped, separators=(",", ":")).encode()


ORDERING_KEYS = 32
"""How many ordering keys there are (the ingress's `PUBSUB_ORDERING_KEYS`): every key is one of a fixed set."""


def bounded_key(identity: str, keys: int = ORDERING_KEYS) -> str:
    """`k{i}/{keys}`, i a stable hash of `identity` modulo `keys`: the same identity always gets the same key."""
    if not 1 <= keys <= 1024:
        raise ValueError(f"keys must be between 1 and 1024, got {keys}")
    digest = hashlib.blake2b(identity.encode(), digest_size=8).digest()
    return f"k{int.from_bytes(digest, 'big') % keys}/{keys}"


def ordering_key(envelope: Envelope, keys: int = ORDERING_KEYS) -> str:
    """One of `keys` ordering keys, chosen by the PayNow customer, else the order, else the event.

    Every event of one PayNow customer gets the same key, so its events keep the order they were published in,
    and one Publish RPC can carry many customers (those that share a key). A refund or chargeback whose customer
    is null hashes its order id, an ignored event with neither its event id, into the same bounded set: Pub/Sub
    (the emulator keeps a thread per key it has seen) and the publisher never see more than `keys` keys.
    """
    data = envelope["data"]
    customer = data.get("customer")
    if customer:
        return customer_ordering_key(customer["id"], keys)
    if data.get("orderId"):
        return bounded_key(f"order:{data['orderId']}", keys)
    return bounded_key(f"event:{envelope['eventId']}", keys)


def customer_ordering_key(customer_id: str, keys: int = ORDERING_KEYS) -> str:
    """The ordering key of every event that names PayNow customer `customer_id`."""
    return bounded_key(f"customer:{customer_id}", keys)


def envelope_attributes(envelope: Envelope) -> dict[str, str]:
    """Pub/Sub attributes that let routing and inspection work without decoding the body."""
    return {
        attributes.VERSION: str(envelope["version"]),
        attributes.EVENT_ID: envelope["eventId"],
        attributes.EVENT_TYPE: envelope["eventType"],
        attributes.REGION: envelope["region"],
    }
