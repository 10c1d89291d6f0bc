"""Personal data in a PayNow delivery, derived from PayNow's webhook definitions, and its removal.

The rule (applied to every property of every event type's schema, `$ref`s resolved):

1. a `flake-id` or `date-time` property, or a number or boolean, is never personal: PayNow's ids are
   pseudonymous, and the ledger and the audit need them (customer id included), and amounts, counts
   (`billing_cycle_sequence`) and flags describe the purchase;
2. every other property of a schema that describes a person (component `CustomerDTO`, `SteamCustomerDTO`,
   `MinecraftCustomerDTO`, `GenericProfileDTO`: a name with `Customer` or `Profile`) is personal: names, Steam,
   Minecraft and other profiles, avatars. Such an object keeps only its flake-ids, so a property PayNow adds to it
   later is removed too;
3. a property whose snake_case name has a word of `PERSONAL_WORDS` (billing name, email, address and country,
   customer IP, Discord account, free-text reasons) or whose description names contact or network data
   (`PERSONAL_DESCRIPTION`) is personal.

`strip` removes them from a parsed delivery in place, along paths computed once at import. A field the vendored
definitions do not declare, in an object on those paths, is judged by its name (rule 3): so `billing_phone` added
by PayNow tomorrow goes at once. A delivery of a type the definitions do not describe keeps no body at all.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from schemas.deliveries import definitions, delivery_schema

PERSON_SCHEMA = re.compile(r"Customer|Profile")
PERSONAL_WORDS = frozenset({"email", "ip", "phone", "address", "billing", "discord", "steam", "minecraft",
                            "avatar", "reason"})
PERSONAL_DESCRIPTION = re.compile(r"e-?mail|\bIP\b|IPv[46]|phone|postal|street", re.IGNORECASE)
KEPT_FORMATS = frozenset({"flake-id", "date-time"})
KEPT_TYPES = frozenset({"integer", "number", "boolean", "null"})
EACH = "[]"
"""Path step meaning every element of an array."""


def is_personal(owner: str | None, name: str, schema: dict[str, Any]) -> bool:
    """The rule above for property `name` (its `schema`) of the component `owner` (None: an inline schema)."""
    types = schema.get("type")
    if schema.get("format") in KEPT_FORMATS or (types and KEPT_TYPES.issuperset(
            [types] if isinstance(types, str) else types)):
        return False
    if owner is not None and PERSON_SCHEMA.search(owner):
        return True
    if PERSONAL_WORDS.intersection(name.split("_")):
        return True
    return bool(PERSONAL_DESCRIPTION.search(schema.get("description") or ""))


@lru_cache(maxsize=1024)
def personal_name(name: str) -> bool:
    """The rule for a property the definitions do not declare: its name alone (rule 3's words)."""
    return is_personal(None, name, {})


@dataclass
class _Node:
    """What to remove under one object of a delivery: `drop` (its personal keys), `keep` (a person: only these
    keys stay, so undeclared ones go too), `children` (objects further down, by key; `EACH`: an array's items).
    A key the definitions do not declare (`declared`) is judged by its name alone (`personal_name`)."""

    keep: frozenset[str] | None = None
    drop: set[str] = field(default_factory=set)
    children: dict[str, _Node] = field(default_factory=dict)
    declared: frozenset[str] = frozenset()

    def empty(self) -> bool:
        return self.keep is None and not self.drop and not self.children


def _component(ref: str) -> tuple[str, dict[str, Any]]:
    name = ref.rsplit("/", 1)[-1]
    schema: dict[str, Any] = definitions()["components"]["schemas"][name]
    return name, schema


def _variants(schema: dict[str, Any], owner: str | None,
              stack: tuple[str, ...]) -> Iterator[tuple[str | None, dict[str, Any], tuple[str, ...]]]:
    """The concrete schemas a schema stands for ($ref resolved, allOf/oneOf/anyOf flattened), each with its owner
    (the component it belongs to) and the components it is nested in; a component inside itself is not followed."""
    if "$ref" in schema:
        name, target = _component(schema["$ref"])
        if name not in stack:
            yield from _variants(target, name, (*stack, name))
        return
    yield owner, schema, stack
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            yield from _variants(sub, owner, stack)


def _node(schema: dict[str, Any], owner: str | None, stack: tuple[str, ...] = ()) -> _Node:
    node = _Node()
    for variant_owner, variant, inner in _variants(schema, owner, stack):
        node.declared = node.declared.union(variant.get("properties", {}))
        if variant_owner is not None and PERSON_SCHEMA.search(variant_owner):
            props = variant.get("properties", {})
            node.keep = frozenset(k for k, s in props.items() if not is_personal(variant_owner, k, s))
        if "items" in variant:
            child = _node(variant["items"], variant_owner, inner)
            if not child.empty():
                node.children[EACH] = child
        for name, prop in variant.get("properties", {}).items():
            if is_personal(variant_owner, name, prop):
                node.drop.add(name)
                continue
            child = _node(prop, variant_owner, inner)
            if not child.empty():
                node.children[name] = child
    return node


def _compile(event_type: str) -> _Node:
    return _node(delivery_schema(event_type), None)


PLANS: dict[str, _Node] = {t: _compile(t) for t in definitions()["webhooks"]}
"""What `strip` removes, per defined event type (computed at import: the request path only walks it)."""


def personal_paths(event_type: str) -> list[str]:
    """The personal fields the definitions declare for a type, as dotted paths (`body.lines[].x`). A person object
    also loses any field the definitions do not declare (it keeps only its ids)."""
    found: list[str] = []

    def walk(node: _Node, path: str) -> None:
        found.extend(f"{path}.{name}" if path else name for name in sorted(node.drop))
        for name, child in sorted(node.children.items()):
            walk(child, f"{path}{EACH}" if name == EACH else f"{path}.{name}" if path else name)

    walk(PLANS[event_type], "")
    return found


def _apply(value: Any, node: _Node) -> None:
    if isinstance(value, list):
        each = node.children.get(EACH)
        if each is not None:
            for item in value:
                _apply(item, each)
        return
    if not isinstance(value, dict):
        return
    if node.keep is not None:
        for key in [k for k in value if k not in node.keep]:
            del value[key]
    else:
        for key in node.drop:
            value.pop(key, None)
        for key in value.keys() - node.declared:  # a field PayNow added after the vendored definitions
            if personal_name(key):
                del value[key]
    for key, child in node.children.items():
        sub = value.get(key)
        if sub is not None:
            _apply(sub, child)


def strip(delivery: dict[str, Any]) -> dict[str, Any]:
    """Remove the personal fields of a parsed delivery in place (see the module's rule) and return it.

    A type the definitions do not describe keeps only its `event_type`, `event_id` and an empty body.
    """
    event_type = delivery.get("event_type")
    plan = PLANS.get(event_type) if isinstance(event_type, str) else None
    if plan is not None:
        _apply(delivery, plan)
        return delivery
    for key in [k for k in delivery if k not in ("event_type", "event_id")]:
        del delivery[key]
    delivery["body"] = {}
    return delivery
