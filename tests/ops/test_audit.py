"""The auditor against a real Firestore emulator: a clean ledger passes; each hand-written drift is caught."""
from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore

from ops import audit


def _event(db: firestore.Client, event_id: str, uid: str, entries: dict[str, int], region: str = "us-central1",
           status: str = "applied", claim: list[str] | None = None) -> None:
    for entry_id, amount in entries.items():
        db.document(f"users/{uid}/ledger/{entry_id}").set({"amount": amount, "eventId": event_id, "region": region})
    db.document(f"webhookEvents/{event_id}").set({"eventId": event_id, "uid": uid, "region": region,
                                                  "status": status, "entryIds": claim if claim is not None
                                                  else list(entries)})


def _wallet(db: firestore.Client, uid: str, balance: int) -> None:
    db.document(f"users/{uid}/wallet/points").set({"paidBalance": balance, "promoBalance": 0})


def _clean(db: firestore.Client) -> None:
    _event(db, "e1", "u1", {"purchase:o1:0": 50, "purchase:o1:1": 20})
    _event(db, "e2", "u1", {"reversal:o1:0": -50}, region="europe-west1")
    _event(db, "e3", "u2", {"subscription:s1:2026-11-01": 150}, region="europe-west1")
    _event(db, "e4", "u2", {}, status="duplicate_business_key")  # a re-delivery under a new id credits nothing
    _wallet(db, "u1", 20)
    _wallet(db, "u2", 150)


def _log(event_id: str, region: str | None, expected: dict[str, dict[str, int]], *, ok: bool = True,
         dlq: str | None = None, kind: str = "webhook") -> dict[str, Any]:
    return {"kind": kind, "eventId": event_id, "ok": ok, "region": region, "expected": expected, "dlq": dlq,
            "scenario": "order"}


TRAFFIC = [
    _log("e1", "us-central1", {"u1": {"purchase:o1:0": 50, "purchase:o1:1": 20}}),
    _log("e2", "europe-west1", {"u1": {"reversal:o1:0": -50}}),
    _log("e3", "europe-west1", {"u2": {"subscription:s1:2026-11-01": 150}}),
    _log("e4", "us-central1", {"u2": {"subscription:s1:2026-11-01": 150}}),
    _log("e5", "us-central1", {}, dlq="unmapped_customer"),
    _log("v1", None, {}, dlq="drop_incompatible", kind="legacy"),
    _log("e6", None, {"u1": {"purchase:o9:0": 500}}, ok=False),  # never accepted: nothing expected
]
DLQ = {"e5": "unmapped_customer", "v1": "drop_incompatible"}


def _failing(report: audit.Report) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def test_a_clean_ledger_and_its_traffic_pass(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    report = audit.audit(audit.Snapshot.read(firestore_db), traffic=TRAFFIC, dlq=DLQ)
    assert report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]
    assert report.get("users: paidBalance == sum(ledger.amount)").value == "2/2"
    assert report.get("accepted events (2xx or published)").value == "6"
    assert report.get("  … with a webhookEvents doc / a DLQ record").value == "4 / 2"


def test_wallet_drift_is_caught(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    _wallet(firestore_db, "u2", 151)
    report = audit.audit(audit.Snapshot.read(firestore_db))
    assert _failing(report) == {"users: paidBalance == sum(ledger.amount)"}
    assert "u2: wallet 151 ≠ ledger 150" in report.get("users: paidBalance == sum(ledger.amount)").detail


def test_a_ledger_without_a_wallet_is_drift(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    firestore_db.document("users/u3/ledger/purchase:o3:0").set({"amount": 20, "eventId": "e7"})
    firestore_db.document("webhookEvents/e7").set({"uid": "u3", "entryIds": ["purchase:o3:0"], "region": "x"})
    assert _failing(audit.audit(audit.Snapshot.read(firestore_db))) == {"users: paidBalance == sum(ledger.amount)"}


def test_a_business_key_claimed_by_two_events_is_caught(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    firestore_db.document("webhookEvents/e9").set({"uid": "u1", "entryIds": ["purchase:o1:0"], "region": "x"})
    report = audit.audit(audit.Snapshot.read(firestore_db))
    assert _failing(report) == {"business keys credited by two events"}
    assert "e1" in report.get("business keys credited by two events").detail


def test_an_orphan_entry_and_a_dangling_claim_are_caught(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    firestore_db.document("users/u1/ledger/purchase:o8:0").set({"amount": 0, "eventId": "nobody"})
    firestore_db.document("webhookEvents/e8").set({"uid": "u2", "entryIds": ["purchase:o8:5"], "region": "x"})
    assert _failing(audit.audit(audit.Snapshot.read(firestore_db))) == {
        "ledger entries without their webhookEvents doc", "webhookEvents entryIds missing from the ledger"}


@pytest.mark.parametrize(("mutate", "failing"), [
    (lambda t, d: d.pop("e5"), {"accepted events neither processed nor in the DLQ (lost)"}),
    (lambda t, d: d.update(v1="drop_malformed"), {"events with an unexpected outcome (DLQ verdict)"}),
    (lambda t, d: d.update(e1="write_failed"), set()),  # processed after all: its webhookEvents doc counts
    (lambda t, d: d.update(e9="unmapped_customer") or t.append(_log("e9", "us-central1", {"u9": {"p:1:0": 5}})),
     {"events with an unexpected outcome (DLQ verdict)", "expected ledger entries (business keys) present"}),
    (lambda t, d: t.append(_log("e1", "us-central1", {"u1": {"purchase:o1:2": 20}})),
     {"expected ledger entries (business keys) present"}),
    (lambda t, d: t.__setitem__(0, _log("e1", "us-central1", {"u1": {"purchase:o1:0": 50}})),
     {"ledger entries nobody paid for"}),
    (lambda t, d: t.__setitem__(0, _log("e1", "us-central1", {"u1": {"purchase:o1:0": 60, "purchase:o1:1": 20}})),
     {"entries with a wrong amount"}),
])
def test_traffic_drift_is_caught(firestore_db: firestore.Client, mutate: Any, failing: set[str]) -> None:
    _clean(firestore_db)
    traffic, dlq = [dict(r) for r in TRAFFIC], dict(DLQ)
    mutate(traffic, dlq)
    assert _failing(audit.audit(audit.Snapshot.read(firestore_db), traffic=traffic, dlq=dlq)) == failing


def test_regional_shares_must_match_what_each_region_acknowledged(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    for i in range(20):  # 20 more events the US acknowledged but recorded as EU: shares drift
        firestore_db.document(f"webhookEvents/r{i}").set({"uid": "u1", "entryIds": [], "region": "europe-west1"})
    traffic = [*TRAFFIC, *(_log(f"r{i}", "us-central1", {}) for i in range(20))]
    report = audit.audit(audit.Snapshot.read(firestore_db), traffic=traffic, dlq=DLQ)
    assert _failing(report) == {"regional shares (acked vs recorded)"}
    assert report.get("events recorded in a region that did not ack them").value == "20"


def test_the_report_table_names_each_check(firestore_db: firestore.Client) -> None:
    _clean(firestore_db)
    _wallet(firestore_db, "u1", 0)
    table = audit.audit(audit.Snapshot.read(firestore_db)).table()
    assert table.row_count == 4
