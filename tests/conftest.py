"""Session-wide real emulators and a fresh, isolated project per test (no test skips when they are missing)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from google.cloud import firestore

from ops import emulators
from ops.catalog import seed_products
from ops.topology import Topology


@pytest.fixture(scope="session")
def emulator_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(pubsub_host, firestore_host); started once per session, or reused from *_EMULATOR_HOST."""
    with emulators.running(log_dir=tmp_path_factory.mktemp("emulators")) as (pubsub, fs):
        yield pubsub.host, fs.host


@pytest.fixture
def topology(emulator_hosts: tuple[str, str]) -> Topology:
    """Topics and subscriptions in a project id of this test's own, so tests never see each other's data."""
    topo = Topology(project=f"test-{uuid.uuid4().hex[:12]}")
    topo.create()
    return topo


@pytest.fixture
def firestore_db(topology: Topology) -> Iterator[firestore.Client]:
    """A Firestore client on the emulator, in the test's project, with the product catalog seeded."""
    client = firestore.Client(project=topology.project)
    seed_products(client)
    yield client
    client.close()
