"""The real streaming pipeline (`python -m pipeline`, DirectRunner, acking read) against the real emulators."""
from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from google.cloud import firestore

from ops.admin.catalog import map_customer, seed_products
from ops.local import emulators
from ops.local.emulators import free_port
from ops.local.pipeline_worker import PipelineProcess, publish_payloads, publisher, wait_until
from ops.local.topology import Topology
from schemas import customer_ordering_key, encode_legacy
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state
from tests.pipeline.test_graph import dlq_verdicts

U1_EVENTS = [
    f.order("e-o1", "o1", [(f.P20, 2), (f.P50, 1)]),
    f.order("e-o1", "o1", [(f.P20, 2), (f.P50, 1)]),  # PayNow re-sent it: dropped by the dedupe
    f.order("e-o1-resend", "o1", [(f.P20, 2), (f.P50, 1)]),  # same order, new event id: credited once
    f.refund("e-r2", "o2"),  # no customer: another ordering key, so it may overtake its order
    f.order("e-o2", "o2", [(f.P150, 1), (f.PRO_MONTHLY, 1, "s9")]),  # the subscription line is its cycles'
    f.chargeback("e-cb3", "o3"),
    f.order("e-o3", "o3", [(f.P500, 1)]),
    f.chargeback("e-cw3", "o3", "won", closed=True),
    f.refund("e-rf-fail", "o1", "failed", customer="c1"),
    f.no_effect("ON_PAYMENT_COMPLETED", "e-pay", customer_id="c1", order_id="o1"),
    f.cycle("e-sa", "s1", f.BASIC_MONTHLY, 1),
    f.cycle("e-sa-resend", "s1", f.BASIC_MONTHLY, 1, renewed=True),
    f.cycle("e-sr", "s1", f.BASIC_MONTHLY, 2),
    f.no_effect("ON_SUBSCRIPTION_CANCELED", "e-sc", customer_id="c1"),
]
U1_LEDGER = {"purchase:o1": 90, "purchase:o2": 150, "reversal:o2": -150, "purchase:o3": 500, "reversal:o3": -500,
             "reinstatement:o3": 500, "subscription:s1:1": 50, "subscription:s1:2": 50}
STATUSES = {"e-o1": {"applied"}, "e-o1-resend": {"duplicate_business_key"}, "e-r2": {"applied", "recorded"},
            "e-o2": {"applied"}, "e-cb3": {"applied", "recorded", "duplicate_business_key"}, "e-o3": {"applied"},
            "e-cw3": {"applied", "recorded"}, "e-rf-fail": {"ignored"}, "e-pay": {"ignored"}, "e-sa": {"applied"},
            "e-sa-resend": {"duplicate_business_key"}, "e-sr": {"applied"}, "e-sc": {"ignored"}, "e-u2": {"applied"}}


def ledger(db: firestore.Client, uid: str) -> dict[str, int]:
    return {d.id: d.get("amount") for d in db.collection(f"users/{uid}/ledger").stream()}


def wallet(db: firestore.Client, uid: str) -> int | None:
    snap = db.document(f"users/{uid}/wallet/points").get()
    return snap.get("paidBalance") if snap.exists else None


def event_statuses(db: firestore.Client) -> dict[str, str]:
    return {d.id: d.get("status") for d in db.collection("webhookEvents").stream()}


def metric_totals(port: int, series: str = "paynow_pipeline_events_total", label: str = "outcome") -> Counter[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith(series + "{"):
            assert 'region="us-central1"' in line
            totals[line.split(f'{label}="')[1].split('"')[0]] += int(float(line.rsplit(" ", 1)[1]))
    return totals


def test_every_event_type_lands_exactly_once_and_rejects_reach_the_dlq(
        topology: Topology, firestore_db: firestore.Client, tmp_path: Path) -> None:
    map_customer(firestore_db, "c-mapped", "u2")
    port = free_port()
    with PipelineProcess(topology, "--metrics_port", str(port), log_dir=tmp_path, env={"LOG_LEVEL": "DEBUG"}) as pipe:
        client = publisher()
        publish_payloads(client, topology.topic, [
            *U1_EVENTS, f.order("e-u2", "o4", [(f.P50, 1)], customer="c-mapped", uid=None),
            f.order("e-nobody", "o5", [(f.P50, 1)], customer="c-unknown", uid=None),
            f.order("e-404", "o6", [("404", 1)])], region="europe-west1")
        client.publish(topology.topic, encode_legacy(1, {"version": 1, "eventId": "old", "eventType": "X",
                                                        "payloadJson": "{}"}), region="us-central1").result()
        client.publish(topology.topic, b"{not avro").result()

        assert wait_until(lambda: len(event_statuses(firestore_db)) >= len(STATUSES), 60), pipe.log()[-3000:]
        assert dlq_verdicts(topology, 4) == {
            ("unmapped_customer", "ResolveAccount", "e-nobody"), ("unmapped_product", "ApplyToLedger", "e-404"),
            ("drop_incompatible", "DecodeAndGate", None), ("drop_malformed", "DecodeAndGate", None)}
        assert wait_until(lambda: sum(metric_totals(port).values()) >= 18, 20)
        # The operator maps the customer and replays the dead letter (as ops.admin.dlq does: same bytes, attributes
        # and ordering key, plus replayedAt): the dedupe that saw its first attempt must let it through.
        map_customer(firestore_db, "c-unknown", "u3")
        replay = f.message(f.order("e-nobody", "o5", [(f.P50, 1)], customer="c-unknown", uid=None))
        client.publish(topology.topic, replay.data, ordering_key=replay.ordering_key,
                       **{**replay.attributes, "replayedAt": "1"}).result()
        assert wait_until(lambda: wallet(firestore_db, "u3") == 50, 30), pipe.log()[-3000:]
        assert wait_until(lambda: sum(metric_totals(port).values()) >= 20, 20)
        totals = metric_totals(port)
        verdicts = metric_totals(port, "paynow_dlq_total", "verdict")
        versions = metric_totals(port, "paynow_schema_versions_total", "version")
        latency_count = metric_totals(port, "paynow_worker_processing_seconds_count", "region")
        log = pipe.log()

    statuses = event_statuses(firestore_db)
    assert statuses.keys() == {*STATUSES, "e-nobody"} and statuses["e-nobody"] == "applied"  # after its replay
    assert all(statuses[e] in allowed for e, allowed in STATUSES.items()), statuses
    assert ledger(firestore_db, "u1") == U1_LEDGER and wallet(firestore_db, "u1") == sum(U1_LEDGER.values()) == 690
    assert ledger(firestore_db, "u2") == {"purchase:o4": 50} and wallet(firestore_db, "u2") == 50
    assert ledger(firestore_db, "u3") == {"purchase:o5": 50}
    check_invariants(read_state(firestore_db))
    # every dead letter is recorded; the replay's own commit resolved its record
    letters = [d.to_dict() or {} for d in firestore_db.collection("deadLetters").stream()]
    assert sorted((x["verdict"], x["state"], x["eventId"] or "") for x in letters) == [
        ("drop_incompatible", "open", ""), ("drop_malformed", "open", ""),
        ("unmapped_customer", "resolved", "e-nobody"), ("unmapped_product", "open", "e-404")]
    resolved = firestore_db.document("deadLetters/e-nobody").get().to_dict() or {}
    assert (resolved["resolvedBy"]["by"], resolved["resolvedBy"]["status"]) == ("replay", "applied")
    doc = firestore_db.document("webhookEvents/e-u2").get().to_dict()
    assert doc["region"] == "europe-west1" and doc["workerRegion"] == "us-central1" and doc["uid"] == "u2"
    assert doc["orderingKey"] == customer_ordering_key("c-mapped") and doc["processedAt"] > doc["publishedAt"]
    # Each of the 20 messages ends once, except that a copy of an event in flight is released, not acked (DESIGN
    # §3), and Pub/Sub then redelivers it and the later messages of its ordering key: more `duplicate` outcomes.
    assert sum(totals.values()) - totals["duplicate"] == 17
    assert totals["dlq"] == 4 and totals["ignored"] == 3 and totals["duplicate"] >= 3
    assert verdicts == {"unmapped_customer": 1, "unmapped_product": 1, "drop_incompatible": 1, "drop_malformed": 1}
    assert versions.keys() == {"4", "unknown"} and versions["4"] >= 18 and versions["unknown"] == 1  # (redeliveries)
    assert latency_count == {"us-central1": 15}  # every commit (the dedupe's drop is not one)
    assert log.count('"message": "pipeline ready"') == 1 and '"message": "event committed"' in log
    committed = [json.loads(line) for line in log.splitlines() if '"message": "event committed"' in line]
    assert committed and all(entry["latencyMs"] > 0 for entry in committed)  # read by the worker p95 log metric


def test_standby_takes_over_after_kill_9_without_loss_or_double_credit(emulator_hosts: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    topo = Topology(project=f"kill9-{free_port()}")
    topo.create(ack_deadline_seconds=10)  # a dead worker's leases lapse after 10 s
    db = firestore.Client(project=topo.project)
    seed_products(db)
    users = [f"k{i}" for i in range(20)]
    payloads = [f.order(f"k-{n}", f"ko-{n}", [(f.P20, 1)], customer=f"c-{users[n % 20]}", uid=users[n % 20])
                for n in range(400)]
    client = publisher()
    first = PipelineProcess(topo, log_dir=tmp_path).start()
    try:
        publish_payloads(client, topo.topic, payloads[:200])
        assert wait_until(lambda: db.collection("webhookEvents").count().get()[0][0].value > 0, 30)
        first.kill9()  # mid-stream: some committed, some leased and unacked, some never pulled
        publish_payloads(client, topo.topic, payloads[200:])
    finally:
        first.kill9()
    with PipelineProcess(topo, log_dir=tmp_path):
        assert wait_until(lambda: db.collection("webhookEvents").count().get()[0][0].value == 400, 90)
    assert len(list(db.collection_group("ledger").stream())) == 400
    for uid in users:
        assert wallet(db, uid) == 20 * 20 == sum(ledger(db, uid).values())


def test_firestore_outage_is_ridden_out_by_retries(emulator_hosts: tuple[str, str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    topo = Topology(project=f"outage-{free_port()}")
    topo.create()
    port = free_port()
    store = emulators.start("firestore", port=port, log_dir=tmp_path)
    env = {"FIRESTORE_EMULATOR_HOST": store.host}
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", store.host)
    try:
        db = firestore.Client(project=topo.project)
        seed_products(db)
        with PipelineProcess(topo, log_dir=tmp_path, env=env) as pipe:  # default settings (DESIGN §3)
            client = publisher()
            publish_payloads(client, topo.topic, [f.order("warm", "warm", [(f.P20, 1)], uid="w")])
            assert wait_until(lambda: wallet(db, "w") == 20, 30)
            store.stop()  # the emulator keeps data in memory: what follows must all land after the restart
            payloads = [f.order(f"out-{n}", f"oo-{n}", [(f.P50, 1)], customer=f"c{n % 5}", uid=f"o{n % 5}")
                        for n in range(30)]
            publish_payloads(client, topo.topic, payloads)
            assert wait_until(lambda: "firestore call failed, retrying" in pipe.log(), 30), pipe.log()[-3000:]
            time.sleep(10)  # connection refused for 10 s: far past 5 attempts of 0.2-1.6 s backoff
            store = emulators.start("firestore", port=port, log_dir=tmp_path)
            db = firestore.Client(project=topo.project)
            assert wait_until(lambda: db.collection("webhookEvents").count().get()[0][0].value == 30, 90), \
                pipe.log()[-3000:]
            assert dlq_verdicts(topo, 1, timeout=2) == set()
        for n in range(5):
            assert wallet(db, f"o{n}") == 6 * 50 == sum(ledger(db, f"o{n}").values())
    finally:
        store.stop()



def test_worker_past_its_memory_bound_recycles_itself_without_loss_or_double_credit(
        topology: Topology, firestore_db: firestore.Client, tmp_path: Path) -> None:
    """A worker that grows past its bound recycles itself (pipeline/local/recycle.py). Beam's own growth is gone
    (pipeline/local/runner.py), so a `sitecustomize` on the worker's path stands in for a leak: a thread that
    keeps 1 MiB more every 0.1 s, started again in every re-executed image."""
    leak = tmp_path / "leak"
    leak.mkdir()
    (leak / "sitecustomize.py").write_text(
        "import threading, time\n"
        "_kept = []\n"
        "def _grow():\n"
        "    while True:\n"
        "        _kept.append(b'x' * (1 << 20))\n"
        "        time.sleep(0.1)\n"
        "threading.Thread(target=_grow, daemon=True).start()\n")
    path = os.pathsep.join(p for p in (str(leak), os.environ.get("PYTHONPATH", "")) if p)
    users = [f"m{i}" for i in range(10)]
    payloads = [f.order(f"m-{n}", f"mo-{n}", [(f.P20, 1)], customer=f"c-{users[n % 10]}", uid=users[n % 10])
                for n in range(300)]
    client = publisher()
    with PipelineProcess(topology, log_dir=tmp_path, env={"PIPELINE_MAX_RSS_MB": "300", "PYTHONPATH": path}) as pipe:
        pid = pipe.process.pid
        for start in range(0, 300, 20):  # a steady trickle across at least one recycle
            publish_payloads(client, topology.topic, payloads[start:start + 20])
            time.sleep(1)
        assert wait_until(lambda: '"message": "recycling worker"' in pipe.log(), 60), pipe.log()[-3000:]
        assert wait_until(lambda: firestore_db.collection("webhookEvents").count().get()[0][0].value == 300, 90), \
            pipe.log()[-3000:]
        assert pipe.process.pid == pid and pipe.process.poll() is None  # the same process, re-executed
    assert len(list(firestore_db.collection_group("ledger").stream())) == 300
    for uid in users:
        assert wallet(firestore_db, uid) == 30 * 20 == sum(ledger(firestore_db, uid).values())
