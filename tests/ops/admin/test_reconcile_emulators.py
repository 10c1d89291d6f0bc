"""`paynow reconcile` end to end: the fake PayNow over HTTP, Firestore and Pub/Sub emulators, the real CLI."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from google.cloud import firestore, pubsub_v1

from ops import cli
from ops.admin import dlq
from ops.local.emulators import LOOPBACK, free_port
from ops.local.fake_paynow import FakePayNow, create_app, order_from_body
from ops.local.topology import Topology
from schemas import decode_envelope, deliveries, ordering_key
from tests.ops.admin.pulling import pull_and_ack

NOW = int(time.time() * 1000)
ONE_TIME = "459935272365195264"


def order(n: int) -> dict:
    return deliveries.order_completed(f"evt_{n}", f"ord_{n}", "cus_1", [deliveries.order_line(f"7{n}", ONE_TIME)],
                                      uid="u1")


@pytest.fixture
def paynow() -> Iterator[tuple[FakePayNow, str]]:
    """The fake served over real HTTP on 127.0.0.1, as `paynow up` runs it."""
    fake = FakePayNow(page_size=2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(fake), host=LOOPBACK, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield fake, f"http://{LOOPBACK}:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def pull(topology: Topology, timeout: float = 5.0, expect: int | None = None) -> list[pubsub_v1.types.ReceivedMessage]:
    return pull_and_ack(topology.subscription, timeout, expect)


def test_reconcile_command_on_emulators(paynow: tuple[FakePayNow, str], topology: Topology,
                                        firestore_db: firestore.Client, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = paynow
    old = NOW - 600_000
    fake.add_delivery(order(1), created_ms=old, attempts=[(old, 202)])  # the ledger has it
    firestore_db.collection("webhookEvents").document("evt_1").set({"status": "applied", "region": "us-central1"})
    fake.add_delivery(order(2), state="failed", created_ms=old + 1, attempts=[(old + i, 503) for i in range(6)])
    fake.add_delivery(order(3), created_ms=old + 2, attempts=[(old + 2, 202)])  # answered 2xx, dead-lettered
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topology.dlq_topic, b"record", eventId="evt_3", verdict="unmapped_customer").result(timeout=30)
    refund = deliveries.refund("evt_r2", "ref_2", "ord_2", "completed")
    fake.add_delivery(refund, state="failed", created_ms=old + 3, attempts=[(old + 3, None)] * 6)
    fake.add_order(order_from_body(order(9)["body"], fake.store_id, old))  # completed, no webhook at all
    monkeypatch.setenv("PAYNOW_API_KEY", fake.api_key)
    argv = ["reconcile", "--since", "1h", "--project", topology.project, "--api-url", url, "--store", fake.store_id]

    assert cli.main([*argv, "--dry-run"]) == 1
    dry = capsys.readouterr().out
    assert pull(topology, 1.5) == []  # the dry run published nothing
    assert "would recover" in dry

    assert cli.main(argv) == 1  # an order without any delivery is left for a human
    out = capsys.readouterr().out
    print(out)  # the reconcile table, in the test log
    for text in ("seen by both", "missing from the ledger", "in the DLQ", "completed orders with no delivery",
                 "recovered now", "503", "unmapped_customer", "ord_9"):
        assert text in out, text
    messages = pull(topology, expect=2)
    assert sorted(m.message.attributes["eventId"] for m in messages) == ["evt_2", "evt_r2"]
    for m in messages:
        assert m.message.attributes["source"] == "reconcile"
        envelope = decode_envelope(bytes(m.message.data))
        assert envelope["eventId"] == m.message.attributes["eventId"]
        assert m.message.ordering_key == ordering_key(envelope)  # the customer's key, or a customerless refund's
    assert {x.event_id for x in dlq.inspect(topology.dlq_subscription)} == {"evt_3"}  # peeked, not consumed

    # the pipeline commits them (webhookEvents carries the source attribute); a second run changes nothing
    for event_id in ("evt_2", "evt_r2"):
        firestore_db.collection("webhookEvents").document(event_id).set({"status": "applied", "source": "reconcile"})
    cli.main(argv)
    again = capsys.readouterr().out
    assert "recovered earlier" in again and pull(topology, 1.5) == []


def test_a_bad_key_is_refused_naming_the_setting(paynow: tuple[FakePayNow, str], topology: Topology,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = paynow
    monkeypatch.setenv("PAYNOW_API_KEY", "wrong")
    code = cli.main(["reconcile", "--since", "1h", "--project", topology.project, "--api-url", url, "--store",
                     fake.store_id, "--dry-run"])
    out = capsys.readouterr().out
    assert code == 1 and "PAYNOW_API_KEY" in out and "401" in out
