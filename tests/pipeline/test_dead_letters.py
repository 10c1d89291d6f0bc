"""A dead letter's Pub/Sub attributes (copies of the DLQ record's own fields), and on the emulator the durable
record's sweep and scan (what the alerts read)."""
from __future__ import annotations

from google.cloud import firestore

from pipeline import observability
from pipeline.dead_letters import dead_letter, record_dead_letters, scan_unresolved, sweep_unresolved
from pipeline.firestore_transport import FirestoreConfig, FirestoreTransport
from pipeline.model import Rejected
from pipeline.observability import RegionMetrics
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


def test_the_sweep_resolves_letters_whose_event_was_committed_another_way_and_the_scan_sees_the_rest(
        firestore_db: firestore.Client) -> None:
    now = 1_800_000_000_000
    transport = FirestoreTransport(firestore_db, FirestoreConfig(firestore_db.project, region="us-central1"))
    old, crashed, resent = (
        Rejected(f.message(f.order(e, f"o-{e}", [(f.P20, 1)], uid=None)), verdict, "r", "ResolveAccount", event_id=e)
        for e, verdict in (("e-old", "unmapped_customer"), ("e-crash", "write_failed"),
                           ("e-resent", "unmapped_customer")))
    assert record_dead_letters(transport.commit, [old], "us-central1", now - 9 * 86_400_000) == []
    assert record_dead_letters(transport.commit, [crashed, resent], "us-central1", now - 3_600_000) == []
    # PayNow re-sent e-resent after the customer was mapped: committed without any replay
    firestore_db.document("webhookEvents/e-resent").set({"status": "applied"})

    assert sweep_unresolved(firestore_db, transport, "europe-west1", now) == 1
    resolved = firestore_db.document("deadLetters/e-resent").get().to_dict() or {}
    assert resolved["state"] == "resolved" and resolved["resolvedAt"] == now
    assert resolved["resolvedBy"] == {"commit": "webhookEvents/e-resent", "eventId": "e-resent", "status": "applied",
                                      "by": "sweep", "region": "europe-west1", "messageId": ""}
    assert sweep_unresolved(firestore_db, transport, "europe-west1", now) == 0

    stats = scan_unresolved(firestore_db, now)
    assert stats == {"unmapped_customer": (1, 9 * 86_400.0), "write_failed": (1, 3_600.0)}
    RegionMetrics("scan-test").unresolved_dead_letters(stats)
    sample = observability._REGISTRY.get_sample_value
    assert sample("paynow_unresolved_dead_letters", {"region": "scan-test", "verdict": "write_failed"}) == 1
    assert sample("paynow_unresolved_dead_letters", {"region": "scan-test", "verdict": "drop_malformed"}) == 0
    assert sample("paynow_unresolved_dead_letter_age_seconds_sum",
                  {"region": "scan-test", "verdict": "unmapped_customer"}) == 9 * 86_400
    assert sample("paynow_unresolved_dead_letter_age_seconds_count",
                  {"region": "scan-test", "verdict": "drop_malformed"}) is None  # never observed: no alert input
