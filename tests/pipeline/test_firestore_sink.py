"""LedgerWriter on the real Firestore emulator: atomic, batched, exactly-once under any repetition."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from ops.topology import Topology
from pipeline.firestore_client import FirestoreConfig
from pipeline.firestore_sink import LedgerWriter, Planned, ProductCatalog, load_products
from pipeline.ledger import Product, plan_event
from pipeline.model import Event
from tests.pipeline import factories as f

CATALOG = {pid: Product(points) for pid, points in f.POINTS.items()}


def planned(payload: dict[str, Any], uid: str = "u1") -> Planned:
    message = f.message(payload)
    env = f.envelope(payload)
    return Planned(Event(message, env, uid), plan_event(env, CATALOG, uid))


@pytest.fixture
def writer(firestore_db: firestore.Client, topology: Topology) -> LedgerWriter:
    return LedgerWriter(firestore_db, FirestoreConfig(topology.project, region="us-central1", max_write_attempts=3),
                        sleep=lambda _: None)


def wallet(db: firestore.Client, uid: str) -> int | None:
    snap = db.document(f"users/{uid}/wallet/points").get()
    return snap.get("paidBalance") if snap.exists else None


def ledger(db: firestore.Client, uid: str) -> dict[str, int]:
    return {d.id: d.get("amount") for d in db.collection(f"users/{uid}/ledger").stream()}


def statuses(results: list) -> list[str]:
    return [r.status for r in results]


def test_a_batch_of_events_for_several_users_commits_once(writer: LedgerWriter, firestore_db: firestore.Client,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    commits = []
    real_send = LedgerWriter._send
    monkeypatch.setattr(LedgerWriter, "_send", lambda self, writes: commits.append(1) or real_send(self, writes))
    events = [planned(f.order("e1", "o1", [(f.P20, 2), (f.P50, 1)])), planned(f.order("e2", "o2", [(f.P500, 1)])),
              planned(f.order("e3", "o3", [(f.P150, 1)], uid="u2"), "u2"),
              planned(f.subscription("e4", "ON_SUBSCRIPTION_CANCELED", "s1", f.BASIC_MONTHLY, None))]
    assert statuses(writer.apply(events)) == ["applied", "applied", "applied", "recorded"]
    assert len(commits) == 1
    assert wallet(firestore_db, "u1") == 590 and wallet(firestore_db, "u2") == 150
    assert ledger(firestore_db, "u1") == {"purchase:o1:0": 40, "purchase:o1:1": 50, "purchase:o2:0": 500}
    doc = firestore_db.document("webhookEvents/e1").get().to_dict()
    assert doc["status"] == "applied" and doc["entryIds"] == ["purchase:o1:0", "purchase:o1:1"]
    assert doc["workerRegion"] == "us-central1" and doc["region"] == "us-central1"
    assert doc["processedAt"] >= doc["publishedAt"] and doc["expiresAt"] > doc["processedAt"]
    assert firestore_db.document("webhookEvents/e4").get().get("status") == "recorded"
    assert firestore_db.document("users/u1/wallet/points").get().get("promoBalance") == 0
    assert isinstance(firestore_db.document("users/u1/wallet/points").get().get("updatedAt"), dt.datetime)
    entry = firestore_db.document("users/u1/ledger/purchase:o1:1").get().to_dict()
    assert isinstance(entry.pop("createdAt"), dt.datetime)
    assert entry == {"amount": 50, "kind": "purchase", "source": "paynow", "eventId": "e1",
                     "eventType": "ON_ORDER_COMPLETED", "region": "us-central1", "orderId": "o1", "productId": f.P50}
    assert isinstance(doc["receivedAt"], dt.datetime) and doc["uid"] == "u1" and doc["orderingKey"] == "uid:u1"


def test_repeated_event_is_a_duplicate_in_the_same_call_and_later(writer: LedgerWriter,
                                                                  firestore_db: firestore.Client) -> None:
    event = planned(f.order("e1", "o1", [(f.P20, 1)]))
    assert statuses(writer.apply([event, event])) == ["applied", "duplicate"]
    assert statuses(writer.apply([event])) == ["duplicate"]
    assert wallet(firestore_db, "u1") == 20 and ledger(firestore_db, "u1") == {"purchase:o1:0": 20}


def test_a_failing_precondition_in_a_batch_falls_back_to_one_by_one(writer: LedgerWriter,
                                                                    firestore_db: firestore.Client) -> None:
    writer.apply([planned(f.order("e2", "o2", [(f.P50, 1)]))])
    batch = [planned(f.order("e1", "o1", [(f.P20, 1)])), planned(f.order("e2", "o2", [(f.P50, 1)])),
             planned(f.order("e3", "o3", [(f.P150, 1)]))]
    assert statuses(writer.apply(batch)) == ["applied", "duplicate", "applied"]
    assert wallet(firestore_db, "u1") == 220 == sum(ledger(firestore_db, "u1").values())


def test_business_keys_credit_once_across_event_ids(writer: LedgerWriter, firestore_db: firestore.Client) -> None:
    results = writer.apply([
        planned(f.order("p1", "o1", [(f.P20, 1)])),
        planned(f.order("r1", "o1", [(f.P20, 1)], event_type="ON_REFUND")),
        planned(f.order("c1", "o1", [(f.P20, 1)], event_type="ON_CHARGEBACK")),
        planned(f.subscription("a1", "ON_SUBSCRIPTION_ACTIVATED", "s1", f.BASIC_MONTHLY, "2026-01-01")),
        planned(f.subscription("n1", "ON_SUBSCRIPTION_RENEWED", "s1", f.BASIC_MONTHLY, "2026-01-01T00:00:00Z")),
    ])
    assert statuses(results) == ["applied", "applied", "duplicate_business_key", "applied",
                                 "duplicate_business_key"]
    assert ledger(firestore_db, "u1") == {"purchase:o1:0": 20, "reversal:o1:0": -20,
                                          "subscription:s1:2026-01-01": 50}
    assert wallet(firestore_db, "u1") == 50
    doc = firestore_db.document("webhookEvents/c1").get().to_dict()
    assert doc["status"] == "duplicate_business_key" and doc["entryIds"] == []


def test_only_missing_entries_are_created_and_credited(writer: LedgerWriter, firestore_db: firestore.Client) -> None:
    writer.apply([planned(f.order("e1", "o1", [(f.P20, 1)]))])
    assert statuses(writer.apply([planned(f.order("e2", "o1", [(f.P20, 1), (f.P50, 2)]))])) == ["applied"]
    assert firestore_db.document("webhookEvents/e2").get().get("entryIds") == ["purchase:o1:1"]
    assert wallet(firestore_db, "u1") == 120 == sum(ledger(firestore_db, "u1").values())


def test_transient_errors_are_retried_then_reported(writer: LedgerWriter, firestore_db: firestore.Client,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real_send = LedgerWriter._send
    failures = iter([gexc.ServiceUnavailable("down"), gexc.DeadlineExceeded("slow")])

    def flaky(self: LedgerWriter, writes: list[Any]) -> None:
        error = next(failures, None)
        if error:
            raise error
        real_send(self, writes)

    monkeypatch.setattr(LedgerWriter, "_send", flaky)
    assert statuses(writer.apply([planned(f.order("e1", "o1", [(f.P20, 1)]))])) == ["applied"]

    def down(self: LedgerWriter, writes: list[Any]) -> None:
        raise gexc.ServiceUnavailable("still down")

    monkeypatch.setattr(LedgerWriter, "_send", down)
    results = writer.apply([planned(f.order("e2", "o2", [(f.P20, 1)])), planned(f.order("e3", "o3", [(f.P20, 1)]))])
    assert statuses(results) == ["write_failed", "write_failed"]
    assert "ServiceUnavailable after 3 attempts" in results[0].reason
    assert wallet(firestore_db, "u1") == 20 and not firestore_db.document("webhookEvents/e2").get().exists


def test_product_catalog_loads_from_firestore_and_refreshes(firestore_db: firestore.Client) -> None:
    now = [0.0]
    catalog = ProductCatalog(lambda: load_products(firestore_db), refresh_seconds=60, clock=lambda: now[0])
    assert catalog.products()[f.P500] == Product(500, "one_time", True)
    firestore_db.document("products/new").set({"points": 7, "kind": "one_time", "active": True})
    firestore_db.document("products/broken").set({"points": "lots"})
    assert "new" not in catalog.products()  # cached
    now[0] = 3.0
    assert catalog.products(missing=True)["new"] == Product(7)  # a miss reloads (at most every 2 s)
    assert "broken" not in catalog.products()
