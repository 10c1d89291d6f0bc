"""Avro contracts shared by ingress and pipeline: envelopes, the DLQ record, the codec and PayNow mapping."""
from __future__ import annotations

from schemas.codec import (
    CURRENT_VERSION,
    MIN_COMPATIBLE,
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
from schemas.paynow import (
    EVENT_TYPES,
    ORDERING_KEYS,
    PayloadError,
    customer_ordering_key,
    envelope_attributes,
    envelope_from_payload,
    ordering_key,
)
from schemas.types import DeadLetter, Envelope

__all__ = [
    "CURRENT_VERSION",
    "EVENT_TYPES",
    "MIN_COMPATIBLE",
    "ORDERING_KEYS",
    "DeadLetter",
    "DecodeError",
    "Envelope",
    "IncompatibleVersion",
    "MalformedMessage",
    "PayloadError",
    "UnknownSchema",
    "customer_ordering_key",
    "decode_dlq_record",
    "decode_envelope",
    "encode_dlq_record",
    "encode_envelope",
    "encode_legacy",
    "envelope_attributes",
    "envelope_from_payload",
    "fingerprint",
    "ordering_key",
]
