"""The emulator harness every integration test stands on: real processes, clear errors, nothing left running."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.cloud import firestore, pubsub_v1

from ops.admin.catalog import KNOWN_PRODUCTS, CatalogError, load_catalog, map_customer, seed_products
from ops.local import emulators
from ops.local.topology import Topology


def test_topology_is_created_idempotently_with_ordering(topology: Topology) -> None:
    topology.create()  # a second time must be harmless
    subscriber = pubsub_v1.SubscriberClient()
    try:
        sub = subscriber.get_subscription(subscription=topology.subscription)
        dlq = subscriber.get_subscription(subscription=topology.dlq_subscription)
    finally:
        subscriber.close()
    assert sub.topic == topology.topic and sub.enable_message_ordering
    assert dlq.topic == topology.dlq_topic


def test_catalog_is_seeded_and_customers_mapped(firestore_db: firestore.Client) -> None:
    assert seed_products(firestore_db) == len(KNOWN_PRODUCTS)  # re-seeding is safe
    doc = firestore_db.collection("products").document("458256188073574400").get()
    assert doc.to_dict()["points"] == 500
    map_customer(firestore_db, "c-1", "u-1")
    assert firestore_db.collection("paynowCustomers").document("c-1").get().to_dict() == {"uid": "u-1"}


def test_bad_catalog_file_names_product_and_field(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text('{"p1": {"points": 1.5, "kind": "one_time"}}')
    with pytest.raises(CatalogError, match="p1: points must be a non-negative integer"):
        load_catalog(path)
    path.write_text('{"p1": {"points": 10, "kind": "one_time"}}')
    assert load_catalog(path) == {"p1": {"points": 10, "kind": "one_time", "active": True}}


def test_started_emulator_stops_with_its_jvm(tmp_path: Path) -> None:
    emulator = emulators.start("pubsub", log_dir=tmp_path)
    assert emulators.is_ready(emulator.host)
    emulator.stop()
    assert emulator.process is not None and emulator.process.poll() is not None
    assert not emulators.is_ready(emulator.host)
    with pytest.raises(ProcessLookupError):
        os.killpg(emulator.process.pid, 0)  # no process of its group (the JVM) survives


def test_missing_sdk_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUDSDK_ROOT", str(tmp_path))
    with pytest.raises(emulators.EmulatorUnavailable, match="pubsub emulator not installed"):
        emulators.start("pubsub")


def test_reusing_a_dead_emulator_host_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{emulators.free_port()}")
    with pytest.raises(emulators.EmulatorUnavailable, match="nothing answers there"):
        emulators.start_or_reuse("firestore")
