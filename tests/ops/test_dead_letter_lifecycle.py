"""A dead letter outlives its Pub/Sub copy: an unmapped order is dead-lettered by the real pipeline, the DLQ's
inspect subscription loses it (deleted and recreated, as retention would after 7 days), the customer is mapped
later, `paynow dlq replay` credits it from the record, and `paynow dlq list` shows it resolved by that commit."""
from __future__ import annotations

import json
from pathlib import Path

import google.cloud.pubsub_v1 as pubsub_v1
import pytest
from google.cloud import firestore

from ops import cli
from ops.admin import dlq
from ops.admin.catalog import KNOWN_PRODUCTS, points
from ops.load.ledger_model import LedgerModel
from ops.local.pipeline_worker import PipelineProcess, publish_payloads, publisher, wait_until
from ops.local.topology import Topology
from schemas import deliveries
from tests.pipeline.ledger_checks import check_invariants, read_state

P150 = "458255787102310400"


def _wallet(db: firestore.Client, uid: str) -> int:
    snap = db.document(f"users/{uid}/wallet/points").get()
    return int(snap.get("paidBalance")) if snap.exists else 0


def _letters(capsys: pytest.CaptureFixture[str], project: str) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert cli.main(["dlq", "list", "--project", project, "--json"]) == 0
    return {row["eventId"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}


def test_a_mapping_days_later_recovers_an_order_whose_pubsub_copy_is_gone(
        topology: Topology, firestore_db: firestore.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNOW_HOME", str(tmp_path / "home"))
    late = deliveries.order_completed("evt_late", "ord_late", "cus_late", [deliveries.order_line("l1", P150, 2)])
    mapped = deliveries.order_completed("evt_ok", "ord_ok", "cus_ok", [deliveries.order_line("l2", P150, 1)])
    assert cli.main(["seed", "--project", topology.project, "--map", "cus_ok=u_ok"]) == 0
    model = LedgerModel(points(KNOWN_PRODUCTS), {"cus_ok": "u_ok"})
    with PipelineProcess(topology, log_dir=tmp_path) as pipe:
        publish_payloads(publisher(), topology.topic, [late, mapped])
        for delivery in (late, mapped):
            model.add(delivery)
        assert wait_until(lambda: _letters(capsys, topology.project).get("evt_late", {}).get("state") == "open", 60), \
            pipe.log()[-3000:]
        assert wait_until(lambda: _wallet(firestore_db, "u_ok") == model.wallets()["u_ok"], 30)

        # Pub/Sub's retention: the DLQ copy is gone (the subscription recreated holds nothing of the past)
        subscriber = pubsub_v1.SubscriberClient()
        subscriber.delete_subscription(subscription=topology.dlq_subscription)
        subscriber.create_subscription(name=topology.dlq_subscription, topic=topology.dlq_topic)
        assert dlq.pull_once(subscriber, topology.dlq_subscription, 10) == []
        subscriber.close()

        row = _letters(capsys, topology.project)["evt_late"]
        assert (row["verdict"], row["state"], row["failures"]) == ("unmapped_customer", "open", 1)
        assert _wallet(firestore_db, "u_late") == model.wallets().get("u_late", 0) == 0

        # the buyer links the account later; the operator maps the customer and replays from the record
        assert cli.main(["seed", "--project", topology.project, "--map", "cus_late=u_late"]) == 0
        capsys.readouterr()
        assert cli.main(["dlq", "replay", "--project", topology.project, "--verdict", "unmapped_customer"]) == 0
        assert "replayed 1" in capsys.readouterr().out
        model.customers["cus_late"] = "u_late"
        model.add(late)  # the replay (the model lets a dead-lettered event come back)
        assert model.wallets()["u_late"] == 300
        assert wait_until(lambda: _wallet(firestore_db, "u_late") == model.wallets()["u_late"], 30), \
            pipe.log()[-3000:]
        assert wait_until(lambda: _letters(capsys, topology.project)["evt_late"]["state"] == "resolved", 10)

    row = _letters(capsys, topology.project)["evt_late"]
    assert row["resolvedBy"] == {"commit": "webhookEvents/evt_late", "eventId": "evt_late", "status": "applied",
                                 "by": "replay", "region": "us-central1", "messageId": row["resolvedBy"]["messageId"]}
    assert _letters(capsys, topology.project).keys() == {"evt_late"}  # the mapped order never was a dead letter
    assert cli.main(["dlq", "list", "--project", topology.project]) == 0
    out = capsys.readouterr().out
    assert "evt_late" in out and "by verdict/state: unmapped_customer/resolved 1" in out
    assert dlq.unresolved(firestore_db) == {}
    check_invariants(read_state(firestore_db))
    assert {u: _wallet(firestore_db, u) for u in ("u_ok", "u_late")} == model.wallets()
