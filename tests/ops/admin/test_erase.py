"""`paynow erase` against the real Firestore and Pub/Sub emulators: the ledger written by the pipeline's own sink,
dead letters in Firestore and on the DLQ, a traffic log; after the erasure a scan of every collection, the DLQ and
the log finds neither of the person's ids, the audit sees no drift, and a re-sent order credits nobody."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore, pubsub_v1
from rich.console import Console

from ops import cli
from ops.admin import audit, erase
from ops.admin.catalog import map_customer
from ops.load import traffic_log
from ops.local.topology import Topology
from pipeline.firestore_transport import FirestoreConfig
from pipeline.model import Event
from pipeline.sink import LedgerWriter
from schemas import dead_letters as dl
from schemas import encode_dlq_record, encode_envelope, envelope_attributes, ordering_key
from tests.ops.admin.pulling import pull_and_ack
from tests.ops.admin.scanning import scan_firestore
from tests.pipeline import factories as f

GONE_UID, GONE_CUSTOMER = "uid-erase-me", "cus-erase-me"
STAY_UID, STAY_CUSTOMER = "uid-keep-me", "cus-keep-me"


def scan_dlq(topology: Topology) -> str:
    """Every message on the DLQ subscription (taken off it), data and attributes, as one text."""
    messages = pull_and_ack(topology.dlq_subscription, timeout=3)
    return "\n".join(f"{bytes(m.message.data).decode('latin-1')} {dict(m.message.attributes)}" for m in messages)


def dead_letter_doc(delivery: dict[str, Any], customer: str) -> dict[str, Any]:
    """The pipeline's `deadLetters` record (schemas/dead_letters.py) of an unmapped customer's order."""
    env = f.envelope(delivery)
    return dl.record_fields(event_id=env["eventId"], verdict="unmapped_customer", step="ResolveAccount",
                            reason=f"no valid uid for PayNow customer {customer!r}", failed_at_ms=1_700_000_000_000,
                            source_region="europe-west1", worker_region="us-central1", data=encode_envelope(env),
                            attributes=envelope_attributes(env), ordering_key=ordering_key(env), uid=None,
                            customer_id=customer, order_id=env["data"]["orderId"])


def publish_dead_letter(topology: Topology, delivery: dict[str, Any]) -> None:
    env = f.envelope(delivery)
    record = {"originalData": encode_envelope(env), "originalAttributes": envelope_attributes(env),
              "verdict": "unmapped_customer", "reason": "no mapping", "failedAt": 1_700_000_000_000,
              "step": "ResolveAccount", "sourceRegion": "europe-west1", "workerRegion": "us-central1",
              "eventId": env["eventId"]}
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topology.dlq_topic, encode_dlq_record(record), verdict="unmapped_customer",
                      eventId=env["eventId"]).result(timeout=30)


def event(delivery: dict[str, Any], uid: str | None) -> Event:
    return Event(f.message(delivery), f.envelope(delivery), uid)


@pytest.fixture
def world(firestore_db: firestore.Client, topology: Topology, tmp_path: Path) -> tuple[LedgerWriter, Path]:
    """Two people with purchases, a subscription cycle, a refund, dead letters and traffic; written by the
    pipeline's sink, the agreed dead-letter record, the DLQ topic and the traffic recorder."""
    writer = LedgerWriter(firestore_db, FirestoreConfig(topology.project, region="us-central1"), sleep=lambda _: None)
    map_customer(firestore_db, GONE_CUSTOMER, GONE_UID)
    map_customer(firestore_db, STAY_CUSTOMER, STAY_UID)
    sent = [f.order("e-gone-1", "o-gone-1", [(f.P150, 2)], customer=GONE_CUSTOMER, uid=GONE_UID),
            f.order("e-gone-2", "o-gone-2", [(f.P20, 1)], customer=GONE_CUSTOMER, uid=None),
            f.cycle("e-gone-3", "sub-gone", f.BASIC_MONTHLY, 1, customer=GONE_CUSTOMER, uid=GONE_UID),
            f.refund("e-gone-4", "o-gone-2"),
            f.order("e-stay-1", "o-stay-1", [(f.P50, 1)], customer=STAY_CUSTOMER, uid=STAY_UID)]
    uids = [GONE_UID, GONE_UID, GONE_UID, None, STAY_UID]
    results = writer.apply([event(d, u) for d, u in zip(sent, uids, strict=True)])
    assert [r.status for r in results] == ["applied"] * 5
    unmapped = f.order("e-gone-5", "o-gone-5", [(f.P20, 1)], customer=GONE_CUSTOMER, uid=None)
    stays = f.order("e-stay-5", "o-stay-5", [(f.P20, 1)], customer=STAY_CUSTOMER, uid=None)
    firestore_db.document("deadLetters/e-gone-5").set(dead_letter_doc(unmapped, GONE_CUSTOMER))
    firestore_db.document("deadLetters/e-stay-5").set(dead_letter_doc(stays, STAY_CUSTOMER))
    publish_dead_letter(topology, unmapped)
    publish_dead_letter(topology, stays)
    log = tmp_path / "traffic" / "run.jsonl"
    recorder = traffic_log.Recorder(log)
    recorder.write({"kind": "run", "runId": "r", "catalog": {}, "customers": {GONE_CUSTOMER: GONE_UID,
                                                                               STAY_CUSTOMER: STAY_UID}})
    for delivery, uid in zip([*sent, unmapped], [*uids, None], strict=True):
        recorder.write({"kind": "webhook", "eventId": delivery["event_id"], "customerId": GONE_CUSTOMER,
                        "uid": uid, "delivery": delivery, "ok": True})
    recorder.close()
    return writer, log


def test_after_an_erasure_no_store_holds_either_id(world: tuple[LedgerWriter, Path], firestore_db: firestore.Client,
                                                    topology: Topology) -> None:
    writer, log = world
    before = scan_firestore(firestore_db)
    assert GONE_UID in before and GONE_CUSTOMER in before  # the scan sees them before

    result = erase.erase(firestore_db, uid=GONE_UID, customer=None, dlq_subscription=topology.dlq_subscription,
                         traffic_logs=[log])
    assert result.person == erase.Person(frozenset({GONE_UID}), frozenset({GONE_CUSTOMER}))
    changed = {(c.store, c.target.split(" ")[0]) for c in result.changes}
    assert ("firestore", "users/uid-erase-me/wallet/points") in changed
    assert {("firestore", "orders/o-gone-1"), ("firestore", "ledgerKeys/subscription:sub-gone:1")} <= changed
    assert ("traffic log", str(log)) in changed

    after = scan_firestore(firestore_db)
    for person_id in (GONE_UID, GONE_CUSTOMER):
        assert person_id not in after, [line for line in after.splitlines() if person_id in line][:3]
        assert person_id not in log.read_text()
    assert STAY_UID in after and STAY_CUSTOMER in after and STAY_UID in log.read_text()  # the bystander is intact
    assert firestore_db.document(f"users/{STAY_UID}/wallet/points").get().get("paidBalance") == 50
    letter = firestore_db.document("deadLetters/e-gone-5").get().to_dict()
    assert letter["state"] == "resolved" and letter["resolvedBy"]["by"] == "erasure"
    assert firestore_db.document("deadLetters/e-stay-5").get().get("state") == "open"
    assert audit.audit(audit.Snapshot.read(firestore_db)).ok  # no drift: erased claims and aggregates are known

    # Idempotent: a second run finds nothing (by uid or by customer).
    assert erase.erase(firestore_db, uid=GONE_UID, customer=None, dlq_subscription=topology.dlq_subscription,
                       traffic_logs=[log]).changes == []
    assert erase.erase(firestore_db, uid=None, customer=GONE_CUSTOMER, dlq_subscription=topology.dlq_subscription,
                       traffic_logs=[log]).changes == []

    # PayNow re-sends the erased person's order (same event, and under a new event id): nothing is credited again.
    again = f.order("e-gone-1", "o-gone-1", [(f.P150, 2)], customer=GONE_CUSTOMER, uid=GONE_UID)
    renamed = f.order("e-gone-9", "o-gone-1", [(f.P150, 2)], customer=GONE_CUSTOMER, uid=GONE_UID)
    statuses = [r.status for r in writer.apply([event(again, GONE_UID), event(renamed, GONE_UID)])]
    assert statuses == ["duplicate", "duplicate_business_key"]
    assert not firestore_db.document(f"users/{GONE_UID}/wallet/points").get().exists

    dlq_text = scan_dlq(topology)
    assert GONE_UID not in dlq_text and GONE_CUSTOMER not in dlq_text
    assert STAY_CUSTOMER in dlq_text  # the bystander's dead letter was handed back, not taken


def test_a_dry_run_changes_nothing_and_lists_what_would_change(world: tuple[LedgerWriter, Path],
                                                               firestore_db: firestore.Client,
                                                               topology: Topology) -> None:
    _, log = world
    before, text = scan_firestore(firestore_db), log.read_text()
    result = erase.erase(firestore_db, uid=None, customer=GONE_CUSTOMER, dlq_subscription=topology.dlq_subscription,
                         traffic_logs=[log], dry_run=True)
    assert {c.store for c in result.changes} == {"firestore", "pubsub DLQ", "traffic log"}
    assert scan_firestore(firestore_db) == before and log.read_text() == text
    assert GONE_CUSTOMER in scan_dlq(topology)


def test_the_command_prints_each_change_and_refuses_bad_ids(world: tuple[LedgerWriter, Path], topology: Topology,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, log = world
    monkeypatch.setenv("PAYNOW_HOME", str(log.parent.parent / "home"))
    monkeypatch.setattr(cli, "make_console", lambda: Console(width=200))
    assert cli.main(["erase", "--customer", GONE_CUSTOMER, "--project", topology.project,
                     "--traffic-dir", str(log.parent)]) == 0
    out = capsys.readouterr().out
    assert "users/uid-erase-me/wallet/points" in out and "deleted" in out and "uid tombstoned" in out
    assert cli.main(["erase", "--customer", GONE_CUSTOMER, "--project", topology.project]) == 0
    assert "nothing tied to customer cus-erase-me" in capsys.readouterr().out
    assert cli.main(["erase", "--uid", "u1", "--project", topology.project, "--traffic-dir", "/nonexistent"]) == 1
    assert "--traffic-dir /nonexistent: no such directory" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["erase", "--project", "p"], "give --uid, --customer or both"),
    (["erase", "--uid", "a/b", "--project", "p"], "--uid 'a/b' is not a valid id"),
    (["erase", "--customer", "__erased__", "--project", "p"], "is the erasure tombstone, not a person"),
])
def test_bad_erase_arguments_are_refused_precisely(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
