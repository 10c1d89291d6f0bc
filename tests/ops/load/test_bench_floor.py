"""The benchmark's floor (`ops.load.bench_floor`) does the ingress's work: a 202 is one confirmed message, the
same envelope and key the ingress publishes; what it cannot verify is refused and not published."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
from starlette.testclient import TestClient

from ops.local.topology import Topology
from schemas import customer_ordering_key, decode_envelope
from schemas.signing import SIGNATURE_HEADER
from tests.ingress.conftest import BASE_ENV, WEBHOOK, order_body, signed_headers
from tests.ingress.test_pubsub_integration import pull


def _floor(monkeypatch: pytest.MonkeyPatch, topology: Topology, **env: str) -> ModuleType:
    for name, value in {**BASE_ENV, "PUBSUB_TOPIC": topology.topic, "GOOGLE_CLOUD_PROJECT": topology.project,
                        **env}.items():
        monkeypatch.setenv(name, value)
    from ops.load import bench_floor
    return importlib.reload(bench_floor)  # its settings are read at import, as a server's are


def test_a_202_from_the_floor_is_one_published_envelope_and_a_bad_signature_is_not(
        topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    floor = _floor(monkeypatch, topology)
    body = order_body("evt-floor-1", uid="user-floor")
    with TestClient(floor.app) as client:
        assert client.get("/readyz").status_code == 200
        forged = client.post(WEBHOOK, content=body, headers={**signed_headers(body), SIGNATURE_HEADER: "AAAA"})
        assert forged.status_code == 400
        response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
        assert response.status_code == 202 and response.json()["eventId"] == "evt-floor-1"
    [message] = pull(topology, expect=1)
    assert message.ordering_key == customer_ordering_key("3001")
    assert decode_envelope(message.data)["eventId"] == "evt-floor-1"
    assert os.environ["PUBSUB_EMULATOR_HOST"]  # the emulator the floor published to


def test_without_the_publish_the_floor_answers_and_publishes_nothing(
        topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    floor = _floor(monkeypatch, topology, FLOOR_PUBLISH="0")
    body = order_body("evt-floor-2", uid="user-floor")
    with TestClient(floor.app) as client:
        assert client.post(WEBHOOK, content=body, headers=signed_headers(body)).status_code == 202
    assert pull(topology, expect=1, wait=3) == []
