"""Dead letters from their durable record against the emulators: the pipeline's writer, filters, show without
personal data, replay from the record's bytes and its state changes."""
from __future__ import annotations

import functools
import time

import pytest
from google.cloud import firestore

from ops.admin import dlq
from ops.local.topology import Topology
from pipeline.dead_letters import record_dead_letters
from pipeline.firestore_transport import FirestoreConfig, FirestoreTransport
from pipeline.model import Rejected
from schemas import customer_ordering_key
from schemas import dead_letters as dl
from tests.ops.admin.pulling import pull_and_ack
from tests.pipeline import factories as f

NOW = 1_800_000_000_000
DAY = 86_400_000


def _record(db: firestore.Client, rejected: list[Rejected], failed_at_ms: int) -> None:
    commit = FirestoreTransport(db, FirestoreConfig(db.project, region="us-central1")).commit
    assert record_dead_letters(commit, rejected, "us-central1", failed_at_ms) == []


@functools.cache  # the same message each time (its envelope carries the time it was built)
def _unmapped(event_id: str, customer: str = "cus_1", region: str = "europe-west1") -> Rejected:
    delivery = f.order(event_id, f"o_{event_id}", [(f.P50, 1)], customer=customer, uid=None)
    return Rejected(f.message(delivery, region=region), "unmapped_customer", f"no uid for {customer}",
                    "ResolveAccount", region, event_id)


@pytest.fixture
def store(topology: Topology, firestore_db: firestore.Client) -> dlq.FirestoreLetters:
    _record(firestore_db, [_unmapped("e1")], NOW - 9 * DAY)
    _record(firestore_db, [Rejected(f.message(f.order("e2", "o2", [("404", 1)]), region="us-central1"),
                                    "unmapped_product", "no product 404", "ApplyToLedger", "us-central1", "e2", "u1")],
            NOW - 2 * DAY)
    _record(firestore_db, [Rejected(f.raw_message(b"\x00junk"), "drop_malformed", "not avro", "DecodeAndGate")],
            NOW - 3600_000)
    return dlq.FirestoreLetters(firestore_db)


def test_the_same_event_dead_lettered_again_updates_its_record(store: dlq.FirestoreLetters,
                                                               firestore_db: firestore.Client) -> None:
    _record(firestore_db, [_unmapped("e1")], NOW - DAY)  # a replay that failed again
    letters = dlq.select(store, now_ms=NOW)
    assert [x.id for x in letters if x.event_id == "e1"] == ["e1"]
    e1 = store.get("e1")
    assert e1 is not None
    assert e1.fields["failures"] == 2 and e1.fields["failedAt"] == NOW - DAY
    assert e1.first_failed_ms == NOW - 9 * DAY and e1.age_s(NOW) == 9 * 86_400  # age counts from the first failure
    assert {k: e1.fields[k] for k in ("verdict", "state", "uid", "customerId", "orderId", "orderingKey",
                                      "sourceRegion", "workerRegion", "step")} == {
        "verdict": "unmapped_customer", "state": "open", "uid": None, "customerId": "cus_1", "orderId": "o_e1",
        "orderingKey": customer_ordering_key("cus_1"), "sourceRegion": "europe-west1", "workerRegion": "us-central1",
        "step": "ResolveAccount"}
    assert e1.envelope == _unmapped("e1").message.data and e1.fields["attributes"]["eventId"] == "e1"
    assert store.get("e2").fields["uid"] == "u1"  # type: ignore[union-attr]
    [junk] = [x for x in letters if not x.event_id]
    assert junk.id.startswith("sha256-") and junk.envelope == b"\x00junk"


def test_filters_by_verdict_state_age_region_and_id_oldest_first(store: dlq.FirestoreLetters) -> None:
    assert [x.event_id for x in dlq.select(store, now_ms=NOW)] == ["e1", "e2", ""]
    by = dlq.Filter
    assert [x.event_id for x in dlq.select(store, by(verdicts=frozenset({"unmapped_product"})), now_ms=NOW)] == ["e2"]
    assert [x.event_id for x in dlq.select(store, by(older_than_s=8 * 86_400), now_ms=NOW)] == ["e1"]
    assert [x.event_id for x in dlq.select(store, by(region="europe-west1"), now_ms=NOW)] == ["e1"]
    assert [x.event_id for x in dlq.select(store, by(event_ids=frozenset({"e2"})), now_ms=NOW)] == ["e2"]
    assert dlq.select(store, by(states=frozenset({"resolved"})), now_ms=NOW) == []
    assert len(dlq.select(store, now_ms=NOW, limit=2)) == 2
    assert dlq.summary(dlq.select(store, now_ms=NOW)) == {
        "drop_malformed/open": 1, "unmapped_customer/open": 1, "unmapped_product/open": 1}
    assert dlq.table(dlq.select(store, now_ms=NOW), now_ms=NOW).row_count == 3


def test_show_prints_no_personal_data_unless_asked(store: dlq.FirestoreLetters) -> None:
    letter = dlq.find(store, "e1")
    assert letter is not None
    shown = dlq.describe(letter, now_ms=NOW)
    assert shown["age"] == "9d" and shown["state"] == "open" and shown["envelope"]["decoded"]["eventId"] == "e1"
    assert "rawPayload" not in str(shown) and "email" not in shown["envelope"]["decoded"]["data"]["customer"]
    assert shown["replayOrderingKey"] == customer_ordering_key("cus_1")
    full = dlq.describe(letter, now_ms=NOW, payload=True)
    assert full["envelope"]["rawPayload"]["event_id"] == "e1"
    assert dlq.find(store, "nope") is None


def test_replay_publishes_the_records_bytes_and_marks_it_replayed(topology: Topology,
                                                                  store: dlq.FirestoreLetters) -> None:
    result = dlq.replay(store, dlq.PubSubPublish(topology.topic), dlq.Filter(verdicts=frozenset({"unmapped_customer"})),
                        now_ms=NOW)
    assert [x.event_id for x in result.replayed] == ["e1"] and not result.failed
    (message,) = pull_and_ack(topology.subscription, 10, 1)
    original = _unmapped("e1").message
    assert message.message.data == original.data and message.message.ordering_key == customer_ordering_key("cus_1")
    assert dict(message.message.attributes) == {**original.attributes, "replayedAt": str(NOW)}
    e1 = store.get("e1")
    assert e1 is not None and e1.state == "replayed" and e1.fields["replays"] == 1 and e1.fields["replayedAt"] == NOW
    # a replayed letter still counts as unresolved (the audit, reconcile and the alerts see it)
    assert dlq.unresolved(store.db) == {"e1": "unmapped_customer", "e2": "unmapped_product"}


def test_a_failed_publish_leaves_the_record_as_it_was(topology: Topology, store: dlq.FirestoreLetters) -> None:
    missing = dlq.PubSubPublish(f"projects/{topology.project}/topics/missing", timeout=10)
    result = dlq.replay(store, missing, dlq.Filter(event_ids=frozenset({"e2"})), now_ms=NOW)
    assert not result.replayed and [x.event_id for x, _ in result.failed] == ["e2"]
    e2 = store.get("e2")
    assert e2 is not None and e2.state == "open" and e2.fields.get("replays") == 0


def test_resolved_letters_are_never_replayed_and_a_dry_run_changes_nothing(
        topology: Topology, store: dlq.FirestoreLetters) -> None:
    store.update("e1", {dl.STATE: dl.RESOLVED})
    publish = dlq.PubSubPublish(topology.topic)
    dry = dlq.replay(store, publish, now_ms=NOW, dry_run=True)
    assert [x.event_id for x in dry.replayed] == ["e2", ""] and dry.dry_run
    assert pull_and_ack(topology.subscription, 1) == []
    assert [x.state for x in dlq.select(store, now_ms=NOW)] == ["resolved", "open", "open"]
    assert [x.event_id for x in dlq.replay(store, publish, now_ms=NOW, limit=1).replayed] == ["e2"]


def test_an_envelope_too_large_to_store_is_recorded_without_it(firestore_db: firestore.Client,
                                                                topology: Topology) -> None:
    huge = Rejected(f.raw_message(b"x" * (dl.MAX_ENVELOPE_BYTES + 1)), "drop_malformed", "big", "DecodeAndGate")
    _record(firestore_db, [huge], NOW)
    store = dlq.FirestoreLetters(firestore_db)
    [letter] = dlq.select(store, now_ms=NOW)
    assert letter.envelope is None and letter.fields["envelopeBytes"] == dl.MAX_ENVELOPE_BYTES + 1
    result = dlq.replay(store, dlq.PubSubPublish(topology.topic), now_ms=int(time.time() * 1000))
    assert "envelope not stored" in result.failed[0][1]


def test_a_replay_takes_todays_bounded_key_never_the_old_one() -> None:
    """A dead letter from before keys were bounded (`orderingKey` `uid:u9` in its attributes and record) is replayed
    under the customer's key of the bounded set; an undecodable one without a key."""
    message = _unmapped("e9", customer="cus_9").message
    old = dlq.Letter("e9", {dl.ENVELOPE: message.data, dl.ORDERING_KEY: "uid:u9",
                            dl.ATTRIBUTES: {**message.attributes, "orderingKey": "uid:u9"}})
    assert dlq.replay_ordering_key(old) == customer_ordering_key("cus_9")
    broken = dlq.Letter("junk", {dl.ENVELOPE: b"{not avro", dl.ORDERING_KEY: "uid:u9"})
    assert dlq.replay_ordering_key(broken) == ""
