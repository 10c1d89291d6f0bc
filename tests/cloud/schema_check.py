"""Check Terraform files against the committed hashicorp/google schema snapshot (deploy/schema/google-provider.json)."""
from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SNAPSHOT = DEPLOY / "schema" / "google-provider.json"
# Terraform's own meta-arguments: valid in every resource and data block, never in the provider's schema.
META_ATTRIBUTES = {"count", "for_each", "provider", "depends_on"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
BOOKKEEPING = {"__is_block__", "__comments__", "__inline_comments__"}


@cache
def snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text())


def _is_block(value: Any) -> bool:
    """python-hcl2 writes a block as a list of dicts marked __is_block__; an argument is anything else."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__")
                                                           for v in value)


def _label(key: str) -> str:
    return key.strip('"')


def check_body(body: dict[str, Any], schema: dict[str, Any], where: str, *, top: bool) -> list[str]:
    """Every problem of one block body against its schema, as `where: message` lines."""
    errors: list[str] = []
    attributes, blocks = schema["attributes"], schema["blocks"]
    given_blocks: set[str] = set()
    for key, value in body.items():
        if key in BOOKKEEPING:
            continue
        if top and key in META_ATTRIBUTES and not _is_block(value):
            continue
        if top and key in META_BLOCKS and _is_block(value):
            continue
        if key == "dynamic" and isinstance(value, list):  # dynamic "name" { for_each = ..., content { ... } }
            for dynamic in value:
                for label, spec in dynamic.items():
                    if label in BOOKKEEPING:
                        continue
                    name = _label(label)
                    if name not in blocks:
                        errors.append(f"{where}: dynamic block {name!r} is not a block of this schema")
                        continue
                    given_blocks.add(name)
                    for content in spec.get("content", []):
                        errors += check_body(content, blocks[name], f"{where}.{name}", top=False)
            continue
        if key in attributes:
            if _is_block(value):
                errors.append(f"{where}: {key!r} is an argument, written as a block (use `{key} = ...`)")
        elif key in blocks:
            if not _is_block(value):
                errors.append(f"{where}: {key!r} is a block, written as an argument (use `{key} {{ ... }}`)")
                continue
            given_blocks.add(key)
            if blocks[key]["nesting"] == "single" and len(value) > 1:
                errors.append(f"{where}: block {key!r} may appear once, found {len(value)} times")
            for item in value:
                errors += check_body(item, blocks[key], f"{where}.{key}", top=False)
        else:
            errors.append(f"{where}: unknown {'block' if _is_block(value) else 'argument'} {key!r}")
    for name, spec in attributes.items():
        if spec["required"] and name not in body:
            errors.append(f"{where}: missing required argument {name!r}")
    for name, spec in blocks.items():
        if spec["required"] and name not in given_blocks:
            errors.append(f"{where}: missing required block {name!r}")
    return errors


def check_document(doc: dict[str, Any], filename: str) -> list[str]:
    """Problems of one parsed .tf file: unknown types, arguments and blocks, missing required ones."""
    schema = snapshot()
    errors: list[str] = []
    for section, known in (("resource", schema["resources"]), ("data", schema["data_sources"])):
        for block in doc.get(section, []):
            for kind, named in block.items():
                if kind in BOOKKEEPING:
                    continue
                kind = _label(kind)
                for name, body in named.items():
                    if name in BOOKKEEPING:
                        continue
                    where = f"{filename}: {'data.' if section == 'data' else ''}{kind}.{_label(name)}"
                    if kind not in known:
                        errors.append(f"{where}: unknown {section} type {kind!r} in hashicorp/google "
                                      f"{schema['version']}")
                        continue
                    errors += check_body(body, known[kind], where, top=True)
    for block in doc.get("provider", []):
        for name, body in block.items():
            if _label(name) == "google":
                errors += check_body(body, schema["provider_config"], f"{filename}: provider.google", top=True)
            elif name not in BOOKKEEPING:
                errors.append(f"{filename}: provider {_label(name)!r} has no schema snapshot")
    return errors


def check_text(text: str, filename: str = "planted.tf") -> list[str]:
    return check_document(hcl2.loads(text), filename)


def check_files(paths: Iterable[Path]) -> list[str]:
    errors: list[str] = []
    for path in paths:
        with path.open() as handle:
            errors += check_document(hcl2.load(handle), path.name)
    return errors
