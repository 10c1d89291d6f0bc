"""The local stack's Prometheus: every target scraped, every seed metric present for both regions, and the
failover count equal to what HAProxy's own stats socket says."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ops.local import prometheus
from ops.local.stack import PRIMARY, SECONDARY, Config, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
REGIONS = {PRIMARY, SECONDARY}


@pytest.fixture(scope="module")
def stack(emulator_hosts: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("paynow-home")
    running = Stack(Config(project=f"prom-{uuid.uuid4().hex[:8]}", home=home))
    try:
        running.start()
        # the operator's own traffic command: signed webhooks (some for unmapped customers) and v1/v2 messages
        subprocess.run([sys.executable, "-m", "ops.cli", "traffic", "--rate", "40", "--duration", "10"],
                       env={**os.environ, "PAYNOW_HOME": str(home)}, check=True, capture_output=True, timeout=120)
        yield running
    finally:
        running.stop()


def _url(stack: Stack) -> str:
    return str(stack.info["prometheus"]["url"])


def test_stack_file_names_prometheus_and_its_dashboard(stack: Stack) -> None:
    url = _url(stack)
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(url + "/-/ready", timeout=5).status_code == 200
    page = httpx.get(stack.info["prometheus"]["dashboard"], timeout=10)
    assert page.status_code == 200 and "webhook_ack_p95_by_region" in page.text
    assert all(region in page.text for region in REGIONS)


def test_every_target_is_scraped(stack: Stack) -> None:
    deadline = time.monotonic() + 30
    while True:
        targets = httpx.get(_url(stack) + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {(t["labels"]["job"], t["labels"].get("region", "")): t["health"] for t in targets}
        if all(h == "up" for h in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health == {("ingress", PRIMARY): "up", ("ingress", SECONDARY): "up", ("pipeline", PRIMARY): "up",
                      ("pipeline", SECONDARY): "up", ("haproxy", ""): "up"}


def test_every_seed_metric_has_both_regions(stack: Stack) -> None:
    deadline = time.monotonic() + 90  # events still in flight reach the pipelines, then a scrape, then the rules
    while True:
        seen = {name: set(prometheus.by_region(_url(stack), name)) for name in prometheus.SEED_METRICS}
        if all(regions >= REGIONS for regions in seen.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert seen == {name: REGIONS for name in prometheus.SEED_METRICS}


def test_failover_events_are_haproxys_own_count(stack: Stack) -> None:
    socket = {s.name: s.check_down for s in stack.lb_stats()}  # independent: HAProxy's stats socket
    time.sleep(5)  # one scrape and one rule evaluation (2 s each)
    recorded = prometheus.by_region(_url(stack), "region_failover_events")
    assert recorded == {region: float(socket[region]) for region in REGIONS}

