"""The DLQ verdicts: one list, the Avro enum of the DeadLetterRecord, and old string-verdict records still read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import MalformedMessage, decode_dlq_record, encode_dlq_record
from schemas.verdicts import VERDICTS, Verdict

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"

# DESIGN §3's list, written out by hand: the independent source both the schema and the enum must equal; the
# cross-team agreement of issue 19 adds `wedged_key` (a conflict whose precondition can never hold) at the end.
DESIGN_VERDICTS = ("drop_incompatible", "drop_malformed", "unknown_schema", "unmapped_customer", "unmapped_product",
                   "write_failed", "wedged_key")

# A DeadLetterRecord encoded before the verdict became an enum (schema dlq_record_v1.avsc, verdict a string),
# produced by the codec of commit ebdd3d1: a DLQ filled then must still be readable after the upgrade.
OLD_RECORD = bytes.fromhex(
    "c30138d595e830dc0bda18c3016e6f742d7265616c6c79040e6576656e744964126576745f6f6c645f310c736f757263650c7061796e6f"
    "770022756e6d61707065645f637573746f6d6572506e6f2076616c69642075696420666f72205061794e6f7720637573746f6d65722027"
    "6375735f312780a0f9a0da661c5265736f6c76654163636f756e74186575726f70652d7765737431186575726f70652d776573743302126576"
    "745f6f6c645f31")

# A DeadLetterRecord encoded with the first verdict enum (six symbols, schema dlq_record_v2.avsc) by the codec of
# commit e37ef4c: adding `wedged_key` changed the writer fingerprint, and these must still be readable.
ENUM_V2_RECORD = bytes.fromhex(
    "c3019248df981cbb882f18c3016e6f742d7265616c6c79020e6576656e744964146576745f656e756d5f31000a3a496e76616c6964417267"
    "756d656e743a2034303020726573657276656480a0f9a0da661a4170706c79546f4c65646765721675732d63656e7472616c311675732d63"
    "656e7472616c3102146576745f656e756d5f31")


def _field_type(name: str, field: str) -> object:
    schema = json.loads((AVRO / f"{name}.avsc").read_text())
    return next(f["type"] for f in schema["fields"] if f["name"] == field)


def test_the_verdict_enum_is_the_avro_enum_and_the_design_list() -> None:
    avro = _field_type("dlq_record", "verdict")
    assert isinstance(avro, dict) and avro["type"] == "enum"
    assert tuple(avro["symbols"]) == DESIGN_VERDICTS == VERDICTS == tuple(v.value for v in Verdict)


def test_the_first_dlq_schema_keeps_a_string_verdict() -> None:
    assert _field_type("dlq_record_v1", "verdict") == "string"


def test_a_record_written_with_the_string_verdict_still_decodes() -> None:
    assert decode_dlq_record(OLD_RECORD) == {
        "originalData": b"\xc3\x01not-really", "originalAttributes": {"eventId": "evt_old_1", "source": "paynow"},
        "verdict": "unmapped_customer", "reason": "no valid uid for PayNow customer 'cus_1'",
        "failedAt": 1_764_460_800_000, "step": "ResolveAccount", "sourceRegion": "europe-west1",
        "workerRegion": "europe-west3", "eventId": "evt_old_1"}


def test_the_enum_only_grows_at_its_end() -> None:
    """Avro resolves enums by name, but readers that index symbols (and the v2 records above) need the old order."""
    old = _field_type("dlq_record_v2", "verdict")
    assert isinstance(old, dict) and tuple(old["symbols"]) == DESIGN_VERDICTS[:len(old["symbols"])]


def test_a_record_written_with_the_six_symbol_enum_still_decodes() -> None:
    assert decode_dlq_record(ENUM_V2_RECORD) == {
        "originalData": b"\xc3\x01not-really", "originalAttributes": {"eventId": "evt_enum_1"},
        "verdict": "write_failed", "reason": "InvalidArgument: 400 reserved", "failedAt": 1_764_460_800_000,
        "step": "ApplyToLedger", "sourceRegion": "us-central1", "workerRegion": "us-central1",
        "eventId": "evt_enum_1"}


def test_new_records_carry_the_enum_and_refuse_an_unknown_verdict() -> None:
    record = {"originalData": b"x", "originalAttributes": {}, "verdict": Verdict.WRITE_FAILED, "reason": "r",
              "failedAt": 1, "step": "ApplyToLedger", "sourceRegion": "unknown", "workerRegion": "unknown",
              "eventId": None}
    data = encode_dlq_record(record)
    assert data[2:10] not in (OLD_RECORD[2:10], ENUM_V2_RECORD[2:10])  # a new writer schema, a new fingerprint
    assert decode_dlq_record(data)["verdict"] == "write_failed"
    assert decode_dlq_record(encode_dlq_record(record | {"verdict": Verdict.WEDGED_KEY}))["verdict"] == "wedged_key"
    with pytest.raises(ValueError):
        encode_dlq_record(record | {"verdict": "lost_in_transit"})


def test_a_truncated_old_record_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_dlq_record(OLD_RECORD[:-5])
