"""Instances of OpenAPI schemas built from their own `example` values: how PayNow's payloads are made here."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

EPOCH = "1970-01-01T00:00:00.000Z"
_DEFAULTS: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False, "object": {}, "array": []}


def resolve(document: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local `$ref`s (`#/components/schemas/X`) until a schema body."""
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def example(document: Mapping[str, Any], schema: Mapping[str, Any], *, max_depth: int = 12, depth: int = 0) -> Any:
    """An instance of `schema` with every required property, each from its `example` where the document gives one
    (combinators take their first non-null branch; a nullable field without example is null)."""
    schema = resolve(document, schema)
    if "example" in schema:
        return copy.deepcopy(schema["example"])
    for combinator in ("allOf", "oneOf", "anyOf"):
        if combinator in schema:
            branches = [resolve(document, b) for b in schema[combinator]]
            chosen = next((b for b in branches if b.get("type") != "null"), branches[0])
            return example(document, chosen, max_depth=max_depth, depth=depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        return None if "null" in kind else copy.deepcopy(_DEFAULTS.get(kind[0]))
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: example(document, properties[name], max_depth=max_depth, depth=depth + 1)
                for name in schema.get("required", []) if name in properties and depth < max_depth}
    if schema.get("format") == "date-time":
        return EPOCH
    return copy.deepcopy(_DEFAULTS.get(kind))
