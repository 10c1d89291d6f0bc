"""Against the real Pub/Sub emulator: a signed POST becomes exactly one message; an outage gives 503, then heals."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from starlette.testclient import TestClient

from ingress import create_app
from ops.local import emulators
from ops.local.topology import Topology
from schemas import customer_ordering_key, decode_envelope, personal
from tests.ingress.conftest import WEBHOOK, make_settings, order_body, signed_headers


def pull(topology: Topology, *, expect: int, wait: float = 10.0,
         settle: float = 1.0) -> list[pubsub_v1.types.PubsubMessage]:
    """Pull until `expect` messages arrived (acking them), then `settle` seconds more to catch extra ones."""
    subscriber = pubsub_v1.SubscriberClient()
    messages: list[pubsub_v1.types.PubsubMessage] = []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=topology.subscription, max_messages=100, timeout=2)
            if response.received_messages:
                subscriber.acknowledge(subscription=topology.subscription,
                                       ack_ids=[m.ack_id for m in response.received_messages])
                messages.extend(m.message for m in response.received_messages)
            if len(messages) >= expect:
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        subscriber.close()
    return messages


def emulator_app(topology: Topology, host: str, **overrides: str) -> TestClient:
    settings = make_settings(PUBSUB_TOPIC=topology.topic, GOOGLE_CLOUD_PROJECT=topology.project,
                             PUBSUB_EMULATOR_HOST=host, **overrides)
    return TestClient(create_app(settings))


def test_signed_post_becomes_exactly_one_message(topology: Topology) -> None:
    body = order_body("evt-int-1", uid="user-int")
    with emulator_app(topology, os.environ["PUBSUB_EMULATOR_HOST"]) as client:
        response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
        assert response.status_code == 202, response.text
        duplicate = client.post(WEBHOOK, content=body, headers=signed_headers(body))
        assert duplicate.status_code == 200
        assert client.get("/readyz").status_code == 200
    [message] = pull(topology, expect=1)
    assert message.ordering_key == customer_ordering_key("3001")
    assert dict(message.attributes) == {"version": "4", "eventId": "evt-int-1", "eventType": "ON_ORDER_COMPLETED",
                                        "region": "europe-west1"}
    envelope = decode_envelope(message.data)
    assert envelope["eventId"] == "evt-int-1" and envelope["region"] == "europe-west1"
    assert envelope["data"]["customer"] == {"id": "3001", "email": None, "uid": "user-int"}
    assert json.loads(envelope["data"]["rawPayload"]) == personal.strip(json.loads(body))


def test_concurrent_posts_for_many_keys_are_all_published(topology: Topology) -> None:
    import concurrent.futures

    bodies = [order_body(f"evt-many-{i}", customer=f"c{i % 7}") for i in range(40)]
    with emulator_app(topology, os.environ["PUBSUB_EMULATOR_HOST"]) as client, \
            concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: client.post(WEBHOOK, content=b, headers=signed_headers(b)).status_code,
                                 bodies))
    assert statuses == [202] * 40
    messages = pull(topology, expect=40)
    assert sorted(m.attributes["eventId"] for m in messages) == sorted(f"evt-many-{i}" for i in range(40))
    assert {m.ordering_key for m in messages} == {customer_ordering_key(f"c{i}") for i in range(7)}


@pytest.fixture
def own_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[emulators.Emulator]:
    """A Pub/Sub emulator of this test's own, which the test may stop and restart on the same port."""
    emulator = emulators.start("pubsub", log_dir=tmp_path)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    try:
        yield emulator
    finally:
        emulator.stop()


def test_outage_gives_503_and_the_resend_is_accepted_once_pubsub_is_back(own_emulator: emulators.Emulator,
                                                                         tmp_path: Path) -> None:
    topology = Topology(project="outage-test")
    topology.create()
    port = int(own_emulator.host.rsplit(":", 1)[1])
    with emulator_app(topology, own_emulator.host, PUBLISH_TIMEOUT="1") as client:
        first = order_body("evt-before")
        assert client.post(WEBHOOK, content=first, headers=signed_headers(first)).status_code == 202

        own_emulator.stop()
        body = order_body("evt-during")
        refused = client.post(WEBHOOK, content=body, headers=signed_headers(body))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json() == {"error": "publish_unavailable",
                                  "detail": "Pub/Sub did not confirm the message; retry later"}
        assert client.get("/readyz").json() == {"error": "not_ready", "detail": "publisher unhealthy"}
        metrics = client.get("/metrics").text
        assert 'paynow_publish_failures_total{region="europe-west1"} 1.0' in metrics
        assert 'paynow_paused_ordering_keys{region="europe-west1"} 0.0' in metrics  # the failed key was released

        restarted = emulators.start("pubsub", port=port, log_dir=tmp_path)
        try:
            topology.create()  # the emulator keeps nothing across a restart
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:  # the publisher's probe notices on its own
                assert time.monotonic() < deadline, "readyz did not recover"
                time.sleep(0.2)
            accepted = client.post(WEBHOOK, content=body, headers=signed_headers(body))  # PayNow's re-send
            assert accepted.status_code == 202, accepted.text
            [message] = pull(topology, expect=1)
        finally:
            restarted.stop()
    assert message.attributes["eventId"] == "evt-during"
    assert decode_envelope(message.data)["eventId"] == "evt-during"
