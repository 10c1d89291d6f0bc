"""Pub/Sub attribute names copy Avro field names; the schema files, read as JSON, are the independent source."""
from __future__ import annotations

import json
from pathlib import Path

from schemas import attributes, envelope_attributes
from tests.schemas.test_codec import v4_envelope

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def _fields(name: str) -> set[str]:
    return {f["name"] for f in json.loads((AVRO / f"{name}.avsc").read_text())["fields"]}


def test_envelope_attributes_are_envelope_fields() -> None:
    names = {attributes.VERSION, attributes.EVENT_ID, attributes.EVENT_TYPE, attributes.REGION}
    assert names <= _fields("envelope_v4")
    assert set(envelope_attributes(v4_envelope())) == names


def test_dlq_attributes_are_dead_letter_record_fields() -> None:
    names = {attributes.VERDICT, attributes.STEP, attributes.SOURCE_REGION, attributes.WORKER_REGION,
             attributes.EVENT_ID}
    assert names <= _fields("dlq_record")
