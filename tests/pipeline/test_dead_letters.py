"""A dead letter's Pub/Sub attributes: the names ops' DLQ tools filter on, copies of the record's own fields."""
from __future__ import annotations

from pipeline.dead_letters import dead_letter
from pipeline.model import Rejected
from schemas import decode_dlq_record
from tests.pipeline import factories as f


def test_attributes_copy_the_record_fields_of_the_same_names() -> None:
    message = f.message(f.order("evt_1", "o1", [(f.P20, 1)]))
    data, attributes = dead_letter(Rejected(message, "unmapped_customer", "no uid", "ResolveAccount", "europe-west1",
                                            "evt_1"), "us-central1", 1_764_460_800_000)
    assert attributes == {"verdict": "unmapped_customer", "step": "ResolveAccount", "sourceRegion": "europe-west1",
                          "workerRegion": "us-central1", "eventId": "evt_1"}
    record = decode_dlq_record(data)
    assert {name: record[name] for name in attributes} == attributes


def test_without_an_event_id_there_is_no_event_id_attribute() -> None:
    _, attributes = dead_letter(Rejected(f.raw_message(b"\x00junk"), "drop_malformed", "bad", "DecodeAndGate"),
                                "us-central1", 1)
    assert "eventId" not in attributes and attributes["sourceRegion"] == "unknown"
