"""Faults against the real streaming pipeline and emulators: a DLQ that cannot be published to, Firestore frozen
(SIGSTOP) while events arrive, poison on the topic. Judged by Pub/Sub and Firestore themselves (DESIGN §3)."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import firestore, pubsub_v1

from ops.admin.catalog import seed_products
from ops.local import emulators
from ops.local.emulators import free_port
from ops.local.pipeline_worker import PipelineProcess, publish_payloads, publisher, wait_until
from ops.local.topology import Topology
from schemas import decode_dlq_record
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state
from tests.pipeline.test_graph import dlq_verdicts


def committed(db: firestore.Client) -> int:
    return int(db.collection("webhookEvents").count().get()[0][0].value)


def test_an_event_whose_dead_letter_cannot_be_published_is_never_acked(emulator_hosts: tuple[str, str],
                                                                        tmp_path: Path) -> None:
    """DLQ topic missing, 10 s ack deadline, one unmapped-customer order: it must stay on the subscription
    (redelivered, never acked as a 'duplicate' of its own failed attempt) and reach the DLQ once it exists."""
    topo = Topology(project=f"dlqdown-{free_port()}")
    topo.create(ack_deadline_seconds=10)
    pubsub_v1.PublisherClient().delete_topic(topic=topo.dlq_topic)  # its subscription is detached, not deleted
    db = firestore.Client(project=topo.project)
    seed_products(db)
    with PipelineProcess(topo, log_dir=tmp_path) as pipe:
        publish_payloads(publisher(), topo.topic, [f.order("e-lost", "o-lost", [(f.P20, 1)], customer="c-nobody",
                                                           uid=None)])
        assert wait_until(lambda: "DLQ publish failed" in pipe.log(), 30), pipe.log()[-3000:]
        time.sleep(30)  # several lease lapses and redeliveries
        # The topic comes back: the next redelivery must be dead-lettered, so it cannot have been acked before.
        topo.create(ack_deadline_seconds=10)
        subscriber = pubsub_v1.SubscriberClient()
        with contextlib.suppress(Exception):
            subscriber.delete_subscription(subscription=topo.dlq_subscription)
        topo.create(ack_deadline_seconds=10)
        back = time.monotonic()
        assert dlq_verdicts(topo, 1, timeout=60) == {("unmapped_customer", "ResolveAccount", "e-lost")}, \
            pipe.log()[-3000:]
        print(f"DLQ topic down 30 s: dead-lettered {time.monotonic() - back:.1f} s after it came back, "
              f"{pipe.log().count('dead letter left for redelivery')} attempts released meanwhile")
    assert committed(db) == 0


@contextlib.contextmanager
def own_firestore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[emulators.Emulator]:
    """A Firestore emulator of this test's own (it gets frozen), selected for this process and the pipeline."""
    store = emulators.start("firestore", log_dir=tmp_path)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", store.host)
    try:
        yield store
    finally:
        os.killpg(store.process.pid, signal.SIGCONT) if store.process else None
        store.stop()


def metric(port: int, series: str, label: str = "") -> float:
    """The sum of a Prometheus series' samples (those carrying `label`, e.g. 'result="error"', if given)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series + "{") and label in line)


def brown_out(freeze_seconds: float, rate: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Events arrive before, during and after Firestore is frozen (SIGSTOP) for `freeze_seconds`, with the
    pipeline's default settings. Every event must end committed exactly once, nothing in the DLQ."""
    users = [f"b{i}" for i in range(10)]
    n = 0

    def send(count: int) -> None:
        nonlocal n
        publish_payloads(client, topo.topic, [f.order(f"bo-{k}", f"bo-{k}", [(f.P20, 1)], customer=f"c-{users[k % 10]}",
                                                      uid=users[k % 10]) for k in range(n, n + count)])
        n += count

    with own_firestore(tmp_path, monkeypatch) as store:
        topo = Topology(project=f"brownout-{free_port()}")
        topo.create()
        db = firestore.Client(project=topo.project)
        seed_products(db)
        port = free_port()
        client = publisher()
        with PipelineProcess(topo, "--metrics_port", str(port), log_dir=tmp_path,
                             env={"FIRESTORE_EMULATOR_HOST": store.host}) as pipe:
            send(20)
            assert wait_until(lambda: committed(db) == 20, 30), pipe.log()[-3000:]
            assert store.process is not None
            os.killpg(store.process.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                while time.monotonic() - frozen_at < freeze_seconds:  # events keep arriving
                    send(max(1, int(rate)))
                    time.sleep(1)
            finally:
                os.killpg(store.process.pid, signal.SIGCONT)
            thawed_at = time.monotonic()
            send(20)
            assert wait_until(lambda: committed(db) == n, 180), pipe.log()[-3000:]
            recovered = time.monotonic() - thawed_at
            errors = metric(port, "paynow_firestore_rpcs_total", 'result="error"')
            throttled = metric(port, "paynow_firestore_throttled_seconds_total")
            released = metric(port, "paynow_pipeline_released_total")
            log = pipe.log()
        assert dlq_verdicts(topo, 1, timeout=3) == set(), log[-3000:]
        state = read_state(db)
        check_invariants(state)
        assert set(state.events) == {f"bo-{k}" for k in range(n)}
        for i, uid in enumerate(users):
            assert state.wallets[uid] == 20 * len(range(i, n, 10)), uid  # exactly once each
        assert '"firestore call failed, retrying"' in log and errors > 0
        figures = {"sent": n, "committed": len(state.events), "dead_lettered": 0, "recover_seconds": recovered,
                   "rpc_errors": errors, "throttled_seconds": throttled, "released": released}
        print(f"brown-out {freeze_seconds:.0f}s: {figures}")
        return figures


def test_a_20_second_firestore_freeze_ends_all_committed_once_and_nothing_dead_lettered(
        emulator_hosts: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = brown_out(20, 3, tmp_path, monkeypatch)
    assert figures["rpc_errors"] > 0  # a frozen Firestore fails an RPC by its 10 s deadline


@pytest.mark.slow
def test_a_90_second_firestore_freeze_ends_all_committed_once_and_nothing_dead_lettered(
        emulator_hosts: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = brown_out(90, 2, tmp_path, monkeypatch)
    # Visible in the RPC counters. Throttled seconds are reported too but not asserted: the adaptive throttler
    # refuses with a probability (>= 1/2 per attempt after a failure), and one CI run saw 0 s (another 7 s).
    assert figures["rpc_errors"] > 0
    print(f"90 s freeze: {figures}")


def dead_letters(topo: Topology, expected: int, timeout: float = 30) -> list[tuple[str, bytes]]:
    """(verdict, original bytes) of each DLQ record, pulled until `expected` arrived."""
    subscriber = pubsub_v1.SubscriberClient()
    found: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            response = subscriber.pull(request={"subscription": topo.dlq_subscription, "max_messages": 100},
                                       timeout=5)
            for received in response.received_messages:
                record = decode_dlq_record(received.message.data)
                found.append((record["verdict"], bytes(record["originalData"])))
            if response.received_messages:
                subscriber.acknowledge(request={"subscription": topo.dlq_subscription,
                                                "ack_ids": [r.ack_id for r in response.received_messages]})
    finally:
        subscriber.close()
    return found


POISON = [
    b"[" * 100_000 + b"]" * 100_000,  # deeply nested JSON
    b'{"version": ' + b"9" * 5000 + b"}",  # an integer past Python's digit limit
    b"\x00" + random.Random(7).randbytes(2048),  # random bytes
]


def test_poison_on_the_topic_is_dead_lettered_as_drop_malformed_and_the_next_order_is_credited(
        topology: Topology, firestore_db: firestore.Client, tmp_path: Path) -> None:
    client = publisher()
    with PipelineProcess(topology, log_dir=tmp_path) as pipe:
        for poison in POISON:
            client.publish(topology.topic, poison).result(timeout=30)
        publish_payloads(client, topology.topic, [f.order("after-poison", "o-ap", [(f.P50, 1)], uid="ap")])
        assert wait_until(lambda: firestore_db.document("users/ap/wallet/points").get().exists, 30), \
            pipe.log()[-3000:]
        records = dead_letters(topology, len(POISON))
        assert pipe.process is not None and pipe.process.poll() is None  # no crash loop
    assert sorted(records) == sorted(("drop_malformed", poison) for poison in POISON)
    assert firestore_db.document("users/ap/wallet/points").get().get("paidBalance") == 50
    assert set(read_state(firestore_db).events) == {"after-poison"}
