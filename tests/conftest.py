"""Session-wide real emulators and a fresh, isolated project per test (no test skips when they are missing)."""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from google.cloud import firestore

from ops.admin.catalog import seed_products
from ops.local import emulators
from ops.local.topology import Topology


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


# --- tiers: `make test-fast` runs what needs no process, emulator or server; `make test` runs everything -----

PROCESS_MODULES = frozenset({
    "tests.cloud.test_dataflow_graph", "tests.cloud.test_gcloud_commands", "tests.cloud.test_provider_schema",
    "tests.cloud.test_templates", "tests.ingress.test_main", "tests.ingress.test_pubsub_integration",
    "tests.ops.local.test_haproxy", "tests.prometheus.test_rules", "tests.ops.local.test_emulators",
    "tests.ops.local.test_process", "tests.cloud.test_paging", "tests.cloud.test_supply_chain",
})
"""Modules whose tests start processes (gcloud, terraform, haproxy, promtool, bash, python -m ...) without an
emulator fixture; the guard below names any test that should be listed here."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "emulator_hosts" in item.fixturenames or item.module.__name__ in PROCESS_MODULES:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the fast tier a test that starts a process fails at once, naming the marker it lacks."""
    if os.environ.get("PAYNOW_TEST_TIER") != "fast" or request.node.get_closest_marker("integration"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{request.node.nodeid} starts a process: list its module in tests/conftest.py "
                           "PROCESS_MODULES (the integration tier)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
