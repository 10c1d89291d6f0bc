"""Personal data in PayNow deliveries: the rule's result on every event type of PayNow's definitions, checked
against a hand-written expectation and the definitions themselves, and what the envelope keeps."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from schemas import deliveries, envelope_from_payload, personal
from schemas.paynow import LEDGER_EVENTS

PERSONAL_LEAVES = frozenset({
    "billing_name", "billing_email", "billing_address_country", "billing_country", "customer_ip",
    "discord_user_id", "discord_user_name", "discord_user_avatar_hash", "cancel_reason", "revoke_reason",
    "steam", "minecraft", "profile",
})
"""Hand-written: the fields of PayNow's definitions that are personal wherever they appear (names, contact and
billing data, IPs, Steam/Minecraft/Discord profiles, free-text reasons), besides a customer's `name`."""
PERSON_OBJECTS = frozenset({"customer", "gift_to_customer"})
"""Hand-written: the properties that hold a CustomerDTO; their `name` is a person's, a product's `name` is not."""
KEPT = ("body.customer.id", "body.checkout.metadata", "body.billing_cycle_sequence", "body.id", "body.order_id",
        "body.lines[].product_id", "body.lines[].quantity", "body.total_amount", "body.status", "body.currency")
"""What the ledger and the audit read must never be taken out, where a type has it."""


def declared(schema: dict[str, Any], path: str, seen: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property path the definitions declare under `schema` (independent of schemas/personal.py)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from declared(deliveries.definitions()["components"]["schemas"][name], path, (*seen, name))
        return
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            yield from declared(sub, path, seen)
    if "items" in schema:
        yield from declared(schema["items"], f"{path}[]", seen)
    for name, sub in schema.get("properties", {}).items():
        child = f"{path}.{name}" if path else name
        yield child, sub
        yield from declared(sub, child, seen)


def declared_paths(event_type: str) -> set[str]:
    return {p for p, _ in declared(deliveries.delivery_schema(event_type), "")}


def expected_personal(event_type: str) -> set[str]:
    """The hand-written expectation: PERSONAL_LEAVES anywhere, and the `name` of a person object."""
    found = set()
    for path in declared_paths(event_type):
        parent, _, leaf = path.rpartition(".")
        if PERSONAL_LEAVES.intersection(parent.replace("[]", "").split(".")):
            continue  # inside something already removed
        if leaf in PERSONAL_LEAVES or (leaf == "name" and parent.rpartition(".")[2] in PERSON_OBJECTS):
            found.add(path)
    return found


TYPES = deliveries.defined_types()


@pytest.mark.parametrize("event_type", TYPES)
def test_the_rule_removes_exactly_the_personal_fields_of_every_type(event_type: str) -> None:
    removed = set(personal.personal_paths(event_type))
    assert removed <= declared_paths(event_type), "a removed field the definitions do not declare"
    assert removed == expected_personal(event_type)
    for kept in KEPT:
        assert kept not in removed


def test_every_personal_kind_is_found_somewhere() -> None:
    """The expectation is not vacuous: each personal leaf and a customer's name occur in the definitions."""
    leaves = {p.rpartition(".")[2] for t in TYPES for p in personal.personal_paths(t)}
    assert leaves == PERSONAL_LEAVES | {"name"}


def planted(event_type: str) -> tuple[dict[str, Any], list[str]]:
    """A factory-built delivery of `event_type` with a distinctive value at every personal path (arrays get one
    element), plus fields PayNow might add to a customer later; and the distinctive values."""
    delivery = deliveries.no_effect(event_type, "411486491630370816", customer_id="411486491630370817")
    schemas = dict(declared(deliveries.delivery_schema(event_type), ""))
    values = []
    for n, path in enumerate(sorted(expected_personal(event_type))):
        *parents, leaf = path.split(".")
        node: Any = delivery
        for depth, step in enumerate(parents):
            key = step.removesuffix("[]")
            if not isinstance(node.get(key), (dict, list)):
                node[key] = [] if step.endswith("[]") else {}
            node = node[key]
            if step.endswith("[]"):
                if not node:  # one element, as the definitions' example of the array's items
                    node.append(deliveries.example(schemas[".".join(parents[:depth + 1])[:-2]]["items"]))
                node = node[0]
        node[leaf] = value = f"PII-{n}-{leaf}"
        values.append(value)
    if isinstance(delivery["body"].get("customer"), dict):
        delivery["body"]["customer"].update(email="PII-added@example.org", phone="PII-+15550100")
        values += ["PII-added@example.org", "PII-+15550100"]
    delivery["body"].update(billing_street="PII-1 Added Street", customer_phone="PII-+15550101")
    values += ["PII-1 Added Street", "PII-+15550101"]
    return delivery, values


@pytest.mark.parametrize("event_type", TYPES)
def test_no_planted_personal_value_reaches_the_envelope(event_type: str) -> None:
    from schemas import encode_envelope

    delivery, values = planted(event_type)
    envelope = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1, region="r")
    data = encode_envelope(envelope)
    assert values and not [v for v in values if v.encode() in data]
    assert b"PII-" not in data


@pytest.mark.parametrize("event_type", TYPES)
def test_everything_else_of_the_delivery_is_kept(event_type: str) -> None:
    delivery, _ = planted(event_type)
    expected = copy.deepcopy(delivery)
    for path in expected_personal(event_type):  # removed by the test's own walk over the delivery
        _remove(expected, path.split("."))
    if isinstance(expected["body"].get("customer"), dict):
        del expected["body"]["customer"]["email"], expected["body"]["customer"]["phone"]
    del expected["body"]["billing_street"], expected["body"]["customer_phone"]
    raw = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1, region="r")["data"]["rawPayload"]
    assert json.loads(raw) == expected


def _remove(node: Any, steps: list[str]) -> None:
    key = steps[0].removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return
    if len(steps) == 1:
        del node[key]
        return
    children = node[key] if steps[0].endswith("[]") and isinstance(node[key], list) else [node[key]]
    for child in children:
        _remove(child, steps[1:])


@pytest.mark.parametrize("event_type", sorted(LEDGER_EVENTS))
def test_the_minimised_delivery_maps_to_the_same_envelope(event_type: str) -> None:
    """What the ledger reads is all still there: mapping the minimised delivery again gives the same envelope."""
    delivery, _ = planted(event_type)
    delivery["body"].setdefault("checkout", deliveries.checkout("user-1"))
    first = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1, region="r")
    again = envelope_from_payload(first["data"]["rawPayload"], timestamp_ms=1, region="r")
    assert again == first
    assert first["data"]["customer"] is None or first["data"]["customer"]["email"] is None


def test_a_field_added_after_the_definitions_is_judged_by_its_name() -> None:
    delivery = deliveries.refund("evt-new-field", "r1", "o1", "completed", customer_id="3001")
    delivery["body"].update(refund_note_amount=5, billing_postcode="PII-75001", customer_phone_number="PII-555")
    delivery["extra_email"] = "PII@example.org"
    envelope = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1, region="r")
    raw = json.loads(envelope["data"]["rawPayload"])
    assert raw["body"]["refund_note_amount"] == 5 and "PII" not in json.dumps(raw)


def test_an_undescribed_type_keeps_only_its_type_and_id() -> None:
    delivery = deliveries.delivery("ON_SOMETHING_NEW", "evt-new", {"customer": {"id": "1", "email": "PII@x.org"}})
    delivery["extra"] = "PII"
    raw = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1, region="r")["data"]["rawPayload"]
    assert json.loads(raw) == {"event_type": "ON_SOMETHING_NEW", "event_id": "evt-new", "body": {}}


def test_values_json_cannot_hold_in_64_bits_are_kept() -> None:
    delivery = deliveries.no_effect("ON_TRIAL_ACTIVATED", "evt-big")
    delivery["body"]["period_value"] = 2**70
    raw = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1, region="r")["data"]["rawPayload"]
    assert json.loads(raw)["body"]["period_value"] == 2**70
