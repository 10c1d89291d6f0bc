"""Avro single-object encoding of envelopes and DLQ records, with v2 -> v3 resolution and version gating."""
from __future__ import annotations

import datetime as dt
import io
import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from schemas.types import DeadLetter, Envelope
from schemas.verdicts import Verdict

CURRENT_VERSION = 4
MIN_COMPATIBLE = 2
MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


class DecodeError(ValueError):
    """A message the pipeline cannot turn into a v3 envelope; `verdict` names its DLQ verdict."""

    verdict = Verdict.DROP_MALFORMED


class MalformedMessage(DecodeError):
    """Not Avro single-object encoded, or the body does not match its writer schema."""

    verdict = Verdict.DROP_MALFORMED


class UnknownSchema(DecodeError):
    """Single-object header with a fingerprint no registered schema has."""

    verdict = Verdict.UNKNOWN_SCHEMA


class IncompatibleVersion(DecodeError):
    """A registered but retired envelope version (below the reader's minCompatible)."""

    verdict = Verdict.DROP_INCOMPATIBLE

    def __init__(self, version: int, min_compatible: int) -> None:
        super().__init__(f"envelope version {version} is below minCompatible {min_compatible}")
        self.version = version


def _crc64_table() -> list[int]:
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro spec calls CRC-64-AVRO."""
    fp = 0xC15D213AA4D7A795
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def _load(name: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath("avro", f"{name}.avsc").read_text()
    schema = fastavro.parse_schema(json.loads(text))
    assert isinstance(schema, dict)  # every .avsc here is a record
    return schema


ENVELOPE_SCHEMAS: dict[int, dict[str, Any]] = {v: _load(f"envelope_v{v}") for v in (1, 2, 3, 4)}
DLQ_SCHEMA = _load("dlq_record")
DLQ_SCHEMA_V1 = _load("dlq_record_v1")
"""The first DeadLetterRecord, verdict a plain string: Avro cannot resolve a string writer to an enum reader, so
records it wrote are read with it as both writer and reader (the verdict is a str either way)."""
DLQ_SCHEMA_V2 = _load("dlq_record_v2")
"""The verdict enum before `wedged_key`: a new symbol is a new fingerprint, so records written with the old enum
are read with it as both writer and reader."""


def _fingerprint(schema: dict[str, Any]) -> bytes:
    return crc64_avro(to_parsing_canonical_form(schema).encode()).to_bytes(8, "little")


@cache
def fingerprint(version: int) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of envelope schema `version`."""
    return _fingerprint(ENVELOPE_SCHEMAS[version])


_CURRENT_SCHEMA = ENVELOPE_SCHEMAS[CURRENT_VERSION]
_VERSION_BY_FINGERPRINT = {fingerprint(v): v for v in ENVELOPE_SCHEMAS}
_DLQ_FINGERPRINT = _fingerprint(DLQ_SCHEMA)
_DLQ_SCHEMA_BY_FINGERPRINT = {_fingerprint(s): s for s in (DLQ_SCHEMA, DLQ_SCHEMA_V2, DLQ_SCHEMA_V1)}


def _write(schema: dict[str, Any], record: dict[str, Any], header: bytes) -> bytes:
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(header)
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def encode_envelope(envelope: Envelope) -> bytes:
    """Encode a v3 envelope dict as Avro single-object bytes."""
    return _write(_CURRENT_SCHEMA, envelope, fingerprint(CURRENT_VERSION))


def encode_legacy(version: int, record: dict[str, Any]) -> bytes:
    """Encode a record with an older registered envelope schema (legacy producers, tests, drills)."""
    return _write(ENVELOPE_SCHEMAS[version], record, fingerprint(version))


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@cache
def _resolver(version: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return ENVELOPE_SCHEMAS[version], ENVELOPE_SCHEMAS[CURRENT_VERSION]


def _legacy_json_version(data: bytes) -> int | None:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # poison on the topic is malformed, not a crash
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, int) else None


def decode_envelope(data: bytes, *, min_compatible: int = MIN_COMPATIBLE) -> Envelope:
    """Decode any registered envelope version into the v3 shape, or raise a DecodeError naming the verdict."""
    if not data.startswith(MAGIC) or len(data) < HEADER_LEN:
        version = _legacy_json_version(data)
        if version is not None and version < min_compatible:
            raise IncompatibleVersion(version, min_compatible)
        raise MalformedMessage("not an Avro single-object message (no C3 01 header)")
    version = _VERSION_BY_FINGERPRINT.get(data[2:HEADER_LEN])
    if version is None:
        raise UnknownSchema(f"writer fingerprint {data[2:HEADER_LEN].hex()} is not registered")
    if version < min_compatible:
        raise IncompatibleVersion(version, min_compatible)
    writer, reader = _resolver(version)
    body = io.BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        envelope = fastavro.schemaless_reader(body, writer, reader)
    except Exception as exc:  # fastavro raises many types for truncated or corrupt bodies
        raise MalformedMessage(f"v{version} body does not decode: {exc!r}") from exc
    if body.read(1):
        raise MalformedMessage(f"v{version} body has trailing bytes")
    assert isinstance(envelope, dict)
    envelope["version"] = version  # the writer's version, whatever default the reader schema carries
    envelope["timestamp"] = _millis(envelope["timestamp"])
    if isinstance(envelope["data"]["rawPayload"], str):  # fastavro yields a bytes field's JSON default as str
        envelope["data"]["rawPayload"] = envelope["data"]["rawPayload"].encode("latin-1")
    if envelope["minCompatible"] > CURRENT_VERSION:
        raise IncompatibleVersion(CURRENT_VERSION, envelope["minCompatible"])
    return envelope


def encode_dlq_record(record: DeadLetter) -> bytes:
    """Encode a DeadLetterRecord as Avro single-object bytes."""
    return _write(DLQ_SCHEMA, record, _DLQ_FINGERPRINT)


def decode_dlq_record(data: bytes) -> DeadLetter:
    """Decode bytes written by encode_dlq_record (this or an earlier DLQ schema); raise MalformedMessage otherwise."""
    schema = _DLQ_SCHEMA_BY_FINGERPRINT.get(data[2:HEADER_LEN]) if data.startswith(MAGIC) else None
    if schema is None:
        raise MalformedMessage("not a DeadLetterRecord")
    body = io.BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        record = fastavro.schemaless_reader(body, schema, schema)
    except Exception as exc:
        raise MalformedMessage(f"DeadLetterRecord does not decode: {exc!r}") from exc
    assert isinstance(record, dict)
    record["failedAt"] = _millis(record["failedAt"])
    return record
