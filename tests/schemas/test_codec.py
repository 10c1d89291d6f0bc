"""Codec: single-object encoding per version, v2 -> v3 resolution, and the distinct refusals."""
from __future__ import annotations

import json

import fastavro
import pytest

from schemas import (
    DecodeError,
    IncompatibleVersion,
    MalformedMessage,
    UnknownSchema,
    decode_dlq_record,
    decode_envelope,
    encode_dlq_record,
    encode_envelope,
    encode_legacy,
    fingerprint,
)
from schemas.codec import DLQ_SCHEMA, ENVELOPE_SCHEMAS, crc64_avro


def v3_envelope(**overrides: object) -> dict[str, object]:
    envelope: dict[str, object] = {
        "version": 3, "minCompatible": 2, "eventId": "evt-1", "eventType": "ON_ORDER_COMPLETED",
        "timestamp": 1_764_158_400_123, "region": "europe-west1",
        "data": {
            "orderId": "o-1", "prettyId": "P-1",
            "customer": {"id": "c-1", "email": "a@example.com", "uid": "u-1"},
            "lines": [{"productId": "459935272365195264", "quantity": 2, "price": "1.99"},
                      {"productId": "458255405240287232", "quantity": 1, "price": None}],
            "subscription": None,
            "deliveryItem": {"id": "d-1", "productId": "459935272365195264", "quantity": 3, "orderId": None},
            "rawPayload": b'{"id":"evt-1"}',
        },
    }
    envelope.update(overrides)
    return envelope


def v2_record() -> dict[str, object]:
    return {"version": 2, "eventId": "evt-2", "eventType": "ON_ORDER_COMPLETED", "timestamp": 1_700_000_000_000,
            "data": {"orderId": "o-2", "prettyId": None, "customer": {"id": "c-2", "email": None, "uid": None},
                     "lines": [{"productId": "459935272365195264", "quantity": 1, "price": None}],
                     "subscription": {"id": "s-1", "productId": "458253675014389760",
                                      "periodStart": "2026-11-01T00:00:00Z", "status": "active"}}}


def test_crc64_avro_matches_the_spec_test_vectors() -> None:
    # From the Avro spec's reference implementation: fingerprint64 of the canonical form of "null".
    assert crc64_avro(b'"null"') == 0x63DD24E7CC258F8A


def test_v3_round_trip_is_exact_and_carries_its_fingerprint() -> None:
    envelope = v3_envelope()
    data = encode_envelope(envelope)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint(3)
    assert decode_envelope(data) == envelope


def test_v2_resolves_to_v3_with_defaults_for_the_fields_it_lacks() -> None:
    decoded = decode_envelope(encode_legacy(2, v2_record()))
    assert decoded["version"] == 2
    assert decoded["minCompatible"] == 2
    assert decoded["region"] == "unknown"
    assert decoded["data"]["deliveryItem"] is None
    assert decoded["data"]["rawPayload"] == b""
    assert decoded["data"]["subscription"]["periodStart"] == "2026-11-01T00:00:00Z"
    assert decoded["timestamp"] == 1_700_000_000_000


def test_every_version_has_a_distinct_fingerprint() -> None:
    assert len({fingerprint(v) for v in ENVELOPE_SCHEMAS}) == len(ENVELOPE_SCHEMAS)


def test_v1_is_refused_as_incompatible() -> None:
    v1 = encode_legacy(1, {"version": 1, "eventId": "e", "eventType": "ON_REFUND", "payloadJson": "{}"})
    with pytest.raises(IncompatibleVersion) as info:
        decode_envelope(v1)
    assert info.value.verdict == "drop_incompatible"
    assert info.value.version == 1


def test_plain_json_legacy_message_is_incompatible_not_malformed() -> None:
    with pytest.raises(IncompatibleVersion):
        decode_envelope(json.dumps({"version": 1, "eventId": "e"}).encode())


def test_raising_min_compatible_retires_v2() -> None:
    with pytest.raises(IncompatibleVersion):
        decode_envelope(encode_legacy(2, v2_record()), min_compatible=3)


def test_envelope_demanding_a_newer_reader_is_incompatible() -> None:
    with pytest.raises(IncompatibleVersion):
        decode_envelope(encode_envelope(v3_envelope(minCompatible=4)))


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xc3", b'{"no": "version"}', b"\x00" * 40])
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode_envelope(data)
    assert info.value.verdict == "drop_malformed"


def test_unknown_fingerprint_is_unknown_schema() -> None:
    with pytest.raises(UnknownSchema) as info:
        decode_envelope(b"\xc3\x01" + b"\x01" * 8 + b"\x00")
    assert info.value.verdict == "unknown_schema"


def test_truncated_and_padded_bodies_are_malformed() -> None:
    data = encode_envelope(v3_envelope())
    with pytest.raises(MalformedMessage):
        decode_envelope(data[:-5])
    with pytest.raises(MalformedMessage):
        decode_envelope(data + b"\x00")


def test_all_refusals_share_one_base_type() -> None:
    for exc in (MalformedMessage, UnknownSchema, IncompatibleVersion):
        assert issubclass(exc, DecodeError)


def test_dlq_record_round_trip_keeps_original_bytes_and_attributes() -> None:
    record = {"originalData": b"\x00\xff raw", "originalAttributes": {"eventId": "e", "version": "1"},
              "verdict": "drop_incompatible", "reason": "version 1 < 2", "failedAt": 1_764_158_400_000,
              "step": "DecodeAndGate", "sourceRegion": "us-central1", "workerRegion": "europe-west1",
              "eventId": "e"}
    assert decode_dlq_record(encode_dlq_record(record)) == record


def test_dlq_decoder_refuses_an_envelope() -> None:
    with pytest.raises(MalformedMessage):
        decode_dlq_record(encode_envelope(v3_envelope()))


def test_schemas_are_valid_avro_and_share_the_record_name() -> None:
    names = {schema["name"] for schema in ENVELOPE_SCHEMAS.values()}
    assert names == {"com.paynowledger.PaymentEventEnvelope"}
    assert fastavro.parse_schema(DLQ_SCHEMA)["name"] == "com.paynowledger.DeadLetterRecord"
