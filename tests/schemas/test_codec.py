"""Codec: single-object encoding per version, v2/v3 -> v4 resolution, and the distinct refusals."""
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


def v4_envelope(**overrides: object) -> dict[str, object]:
    envelope: dict[str, object] = {
        "version": 4, "minCompatible": 2, "eventId": "1001", "eventType": "ON_ORDER_COMPLETED",
        "timestamp": 1_764_158_400_123, "region": "europe-west1",
        "data": {
            "orderId": "2001", "customer": {"id": "3001", "email": "a@example.com", "uid": "u-1"},
            "lines": [{"productId": "459935272365195264", "quantity": 2, "lineId": "1", "subscriptionId": None,
                       "totalCents": 398},
                      {"productId": "458253675014389760", "quantity": 1, "lineId": "2", "subscriptionId": "55",
                       "totalCents": None}],
            "subscription": None, "refund": None,
            "chargeback": {"paymentId": "7", "status": "chargeback", "chargebackStatus": "won", "amountCents": 5},
            "totalCents": 398, "currency": "USD", "rawPayload": b'{"event_id":"1001"}',
        },
    }
    envelope.update(overrides)
    return envelope


def v3_record() -> dict[str, object]:
    return {"version": 3, "minCompatible": 2, "eventId": "evt-3", "eventType": "ON_ORDER_COMPLETED",
            "timestamp": 1_764_158_400_123, "region": "europe-west1",
            "data": {"orderId": "o-3", "prettyId": "P-1", "customer": {"id": "c-3", "email": None, "uid": "u-3"},
                     "lines": [{"productId": "459935272365195264", "quantity": 2, "price": "1.99"}],
                     "subscription": None, "deliveryItem": None, "rawPayload": b"{}"}}


def v2_record() -> dict[str, object]:
    return {"version": 2, "eventId": "evt-2", "eventType": "ON_ORDER_COMPLETED", "timestamp": 1_700_000_000_000,
            "data": {"orderId": "o-2", "prettyId": None, "customer": {"id": "c-2", "email": None, "uid": None},
                     "lines": [{"productId": "459935272365195264", "quantity": 1, "price": None}],
                     "subscription": {"id": "s-1", "productId": "458253675014389760",
                                      "periodStart": "2026-11-01T00:00:00Z", "status": "active"}}}


def test_crc64_avro_matches_the_spec_test_vectors() -> None:
    # From the Avro spec's reference implementation: fingerprint64 of the canonical form of "null".
    assert crc64_avro(b'"null"') == 0x63DD24E7CC258F8A


def test_v4_round_trip_is_exact_and_carries_its_fingerprint() -> None:
    envelope = v4_envelope()
    data = encode_envelope(envelope)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint(4)
    assert decode_envelope(data) == envelope


def test_v2_resolves_to_v4_with_defaults_for_the_fields_it_lacks() -> None:
    decoded = decode_envelope(encode_legacy(2, v2_record()))
    assert decoded["version"] == 2
    assert decoded["minCompatible"] == 2
    assert decoded["region"] == "unknown"
    assert decoded["data"]["rawPayload"] == b""
    assert decoded["data"]["customer"] == {"id": "c-2", "email": None, "uid": None}
    assert decoded["data"]["lines"] == [{"productId": "459935272365195264", "quantity": 1, "lineId": None,
                                         "subscriptionId": None, "totalCents": None}]
    assert decoded["data"]["subscription"] == {"id": "s-1", "productId": "458253675014389760", "cycle": None,
                                               "status": "active", "totalCents": None}
    assert decoded["data"]["refund"] is None and decoded["data"]["chargeback"] is None
    assert decoded["timestamp"] == 1_700_000_000_000


def test_v3_resolves_to_v4_dropping_the_fields_v4_retired() -> None:
    decoded = decode_envelope(encode_legacy(3, v3_record()))
    assert decoded["version"] == 3
    assert decoded["region"] == "europe-west1"
    assert decoded["data"]["customer"]["uid"] == "u-3"
    assert "prettyId" not in decoded["data"] and "deliveryItem" not in decoded["data"]
    assert decoded["data"]["lines"][0]["quantity"] == 2


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
        decode_envelope(encode_envelope(v4_envelope(minCompatible=5)))


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
    data = encode_envelope(v4_envelope())
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
        decode_dlq_record(encode_envelope(v4_envelope()))


def test_schemas_are_valid_avro_and_share_the_record_name() -> None:
    names = {schema["name"] for schema in ENVELOPE_SCHEMAS.values()}
    assert names == {"com.paynowledger.PaymentEventEnvelope"}
    assert fastavro.parse_schema(DLQ_SCHEMA)["name"] == "com.paynowledger.DeadLetterRecord"
