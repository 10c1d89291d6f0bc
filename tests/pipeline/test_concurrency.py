"""Two pipeline processes on one subscription commit the same orders' events at once (different ordering keys)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from google.cloud import firestore

from ops.load.ledger_model import LedgerModel
from ops.local.pipeline_worker import PipelineProcess, publish_payloads, publisher, wait_until
from ops.local.topology import Topology
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state

ORDERS = 150


def deliveries(seed: int) -> list[dict[str, Any]]:
    """Per order: its purchase (key uid:...), a completed refund and a won closing without a customer (key
    order:...), shuffled, so the two workers routinely hold events of one order at the same time."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(ORDERS):
        order_id = f"o{n}"
        events.append(f.order(f"p{n}", order_id, [(f.P50, 1 + n % 3), (f.P20, 1)], customer=f"c{n % 5}",
                              uid=f"u{n % 5}"))
        if n % 2 == 0:
            events.append(f.refund(f"r{n}", order_id))
        if n % 3 == 0:
            events.append(f.chargeback(f"w{n}", order_id, "won", closed=True))
    rng.shuffle(events)
    return events


def test_two_workers_commit_one_orders_events_concurrently_without_a_lost_update(
        topology: Topology, firestore_db: firestore.Client, tmp_path: Path) -> None:
    events = deliveries(seed=7)
    model = LedgerModel(f.POINTS, {})
    for delivery in events:
        model.add(delivery)
    with PipelineProcess(topology, log_dir=tmp_path), PipelineProcess(topology, log_dir=tmp_path):
        publish_payloads(publisher(), topology.topic, events)
        done = wait_until(lambda: len(list(firestore_db.collection("webhookEvents").list_documents())) >= len(events),
                          180, 0.5)
    assert done, "not every event was committed"
    state = read_state(firestore_db)
    check_invariants(state)
    assert state.wallets == model.wallets()
    for n in range(0, ORDERS, 2):  # refunded: one reversal, net zero whatever the closing did
        order = state.orders[f"o{n}"]
        assert order["entries"].count(f"reversal:o{n}") == 1
        assert sum(state.entries[order["uid"]][key]["amount"] for key in order["entries"]) == 0 == model.net(f"o{n}")
    assert {k for k in state.claimed() if k.startswith("reinstatement:")} >= {
        f"reinstatement:o{n}" for n in range(ORDERS) if n % 3 == 0 and n % 2 == 1}
