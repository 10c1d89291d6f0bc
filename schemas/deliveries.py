"""PayNow deliveries built from PayNow's published webhook definitions: the one factory tests, traffic, demo use.

Each delivery starts from the definition's own schema for its event type, with every required field filled from
the schema's `example` values ($refs resolved), and then the few fields a scenario cares about overridden. So what
the project sends itself is what PayNow sends; `validate` checks a delivery against the definitions (jsonschema).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from schemas import openapi_example

DEFINITIONS_PATH = "vendor/paynow/webhook-definitions.json"
_URI = "urn:paynow:webhook-definitions"


@cache
def definitions() -> dict[str, Any]:
    """PayNow's webhook definitions (OpenAPI 3.1), as vendored in this package."""
    document: dict[str, Any] = json.loads(resources.files("schemas").joinpath(DEFINITIONS_PATH).read_text())
    return document


def defined_types() -> list[str]:
    """The event types that have a published body schema (`webhooks.<TYPE>`)."""
    return sorted(definitions()["webhooks"])


def event_type_enum() -> list[str]:
    """PayNow's `WebhookEventType` enum (some members have no published body yet)."""
    return list(definitions()["components"]["schemas"]["WebhookEventType"]["enum"])


def delivery_schema(event_type: str) -> dict[str, Any]:
    """The definitions' JSON schema of a whole delivery of `event_type`."""
    hook = definitions()["webhooks"][event_type]
    schema: dict[str, Any] = hook["post"]["requestBody"]["content"]["application/json"]["schema"]
    return schema


def example(schema: Mapping[str, Any]) -> Any:
    """An instance of a schema of the definitions, from its examples (see schemas.openapi_example)."""
    return openapi_example.example(definitions(), schema)


@cache
def _cached_example(event_type: str | None, ref: str | None) -> Any:
    schema = delivery_schema(event_type)["properties"]["body"] if event_type else {"$ref": ref}
    return example(schema)


def _fresh(event_type: str | None = None, ref: str | None = None) -> Any:
    """A deep copy of the example body of `event_type` or of the component `ref`, built once (traffic makes
    hundreds a second; building one from the definitions costs milliseconds)."""
    return copy.deepcopy(_cached_example(event_type, ref))


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def delivery(event_type: str, event_id: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A delivery of a defined type: the schema's example body with `body` merged over it (dicts deeply).

    A type of the enum with no published body schema gets just `body` (PayNow adds types; we accept them).
    """
    defined = event_type in definitions()["webhooks"]
    base = _fresh(event_type) if defined else {}
    return {"event_type": event_type, "event_id": event_id, "body": _merge(base, body or {})}


def customer(customer_id: str, *, name: str | None = None) -> dict[str, Any]:
    """A whole CustomerDTO: the definitions' example customer with this id."""
    return _merge(_fresh(ref="#/components/schemas/CustomerDTO"),
                  {"id": customer_id, "name": name or f"customer {customer_id}"})


def checkout(uid: str | None, checkout_id: str = "411486491630370816") -> dict[str, Any]:
    """A CheckoutDTO override; `uid` goes where our storefront puts it, `checkout.metadata.uid`."""
    return {"id": checkout_id, "metadata": {"uid": uid} if uid is not None else {}, "lines": []}


def order_line(line_id: str, product_id: str, quantity: int = 1, *, subscription_id: str | None = None,
               price_cents: int = 1000) -> dict[str, Any]:
    """An OrderLineDTO from the definitions' example, for `quantity` of `product_id`."""
    line: dict[str, Any] = _fresh(ref="#/components/schemas/OrderLineDTO")
    total = price_cents * quantity
    return _merge(line, {"id": line_id, "product_id": product_id, "quantity": quantity, "price": price_cents,
                         "subtotal_amount": total, "discount_amount": 0, "tax_amount": 0, "total_amount": total,
                         "subscription_id": subscription_id})


def order_completed(event_id: str, order_id: str, customer_id: str, lines: Sequence[dict[str, Any]], *,
                    uid: str | None = None) -> dict[str, Any]:
    """ON_ORDER_COMPLETED for `lines` (see `order_line`), paid by `customer_id`, for `uid` if the checkout names it."""
    total = sum(int(line["total_amount"]) for line in lines)
    return delivery("ON_ORDER_COMPLETED", event_id, {
        "id": order_id, "customer": customer(customer_id), "checkout": checkout(uid), "lines": list(lines),
        "status": "completed", "subtotal_amount": total, "total_amount": total, "tax_amount": 0,
        "discount_amount": 0, "currency": "USD"})


def refund(event_id: str, refund_id: str, order_id: str, status: str, *, customer_id: str | None = None,
           amount_cents: int = 1000) -> dict[str, Any]:
    """ON_REFUND of a whole payment; PayNow's refund names the order, not its lines."""
    return delivery("ON_REFUND", event_id, {
        "id": refund_id, "order_id": order_id, "status": status, "amount": amount_cents,
        "store_refund_amount": amount_cents, "customer": customer(customer_id) if customer_id else None})


def chargeback(event_id: str, payment_id: str, order_id: str, chargeback_status: str, *, closed: bool = False,
               customer_id: str | None = None, amount_cents: int = 1000) -> dict[str, Any]:
    """ON_CHARGEBACK (opened) or ON_CHARGEBACK_CLOSED (`won` or `lost`) of an order's payment."""
    return delivery("ON_CHARGEBACK_CLOSED" if closed else "ON_CHARGEBACK", event_id, {
        "id": payment_id, "order_id": order_id, "status": "chargeback", "chargeback_status": chargeback_status,
        "amount": amount_cents, "customer": customer(customer_id) if customer_id else None})


def subscription_cycle(event_id: str, subscription_id: str, product_id: str, cycle: int, customer_id: str, *,
                       uid: str | None = None, renewed: bool = False, total_cents: int = 999) -> dict[str, Any]:
    """ON_SUBSCRIPTION_ACTIVATED (or _RENEWED) for billing cycle `cycle` of a subscription."""
    return delivery("ON_SUBSCRIPTION_RENEWED" if renewed else "ON_SUBSCRIPTION_ACTIVATED", event_id, {
        "id": subscription_id, "product_id": product_id, "billing_cycle_sequence": cycle,
        "customer_id": customer_id, "customer": customer(customer_id), "checkout": checkout(uid),
        "status": "active", "total_amount": total_cents, "subtotal_amount": total_cents, "currency": "USD"})


def no_effect(event_type: str, event_id: str, *, customer_id: str | None = None,
              order_id: str | None = None) -> dict[str, Any]:
    """A delivery of a type the ledger ignores (payments, deliveries, trials, cancellations, ...)."""
    overrides: dict[str, Any] = {}
    if customer_id is not None and event_type in definitions()["webhooks"]:
        body = delivery_schema(event_type)["properties"]["body"]
        if "customer" in body.get("properties", {}):
            overrides["customer"] = customer(customer_id)
    if order_id is not None and "order_id" in _body_properties(event_type):
        overrides["order_id"] = order_id
    return delivery(event_type, event_id, overrides)


def _body_properties(event_type: str) -> Iterable[str]:
    if event_type not in definitions()["webhooks"]:
        return ()
    properties: dict[str, Any] = delivery_schema(event_type)["properties"]["body"].get("properties", {})
    return properties.keys()


def encode(delivery_doc: Mapping[str, Any]) -> bytes:
    """The delivery as PayNow puts it on the wire: compact JSON, UTF-8."""
    return json.dumps(delivery_doc, separators=(",", ":"), ensure_ascii=False).encode()


def validator(event_type: str) -> Any:
    """A jsonschema validator of whole deliveries of `event_type` against PayNow's definitions (test-time only)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    resource = Resource.from_contents(definitions(), default_specification=_spec())
    registry = Registry().with_resource(_URI, resource)
    pointer = f"{_URI}#/webhooks/{event_type}/post/requestBody/content/application~1json/schema"
    return Draft202012Validator({"$ref": pointer}, registry=registry)


def _spec() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


def validate(delivery_doc: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the delivery matches PayNow's definition of its type."""
    validator(str(delivery_doc["event_type"])).validate(delivery_doc)
