"""Faults against the real streaming pipeline and emulators: a DLQ that cannot be published to, Firestore frozen
(SIGSTOP) while events arrive, poison on the topic. Judged by Pub/Sub and Firestore themselves (DESIGN §3)."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import firestore, pubsub_v1

from ops import emulators
from ops.bench_pipeline import PipelineProcess, publish_payloads, publisher, wait_until
from ops.catalog import seed_products
from ops.emulators import free_port
from ops.topology import Topology
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
        assert dlq_verdicts(topo, 1, timeout=60) == {("unmapped_customer", "ResolveAccount", "e-lost")}, \
            pipe.log()[-3000:]
    assert committed(db) == 0
