"""Issue A's walking skeleton, end to end with real processes: signed HTTP webhook -> ingress -> Pub/Sub
emulator -> streaming pipeline (DirectRunner) -> Firestore emulator, plus a v1 message to the DLQ."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import firestore, pubsub_v1

from ops.local.emulators import free_port
from ops.local.stack import Process
from ops.local.topology import Topology
from schemas import deliveries, encode_legacy
from schemas.signing import signed_headers
from tests.ops.admin.scanning import scan_firestore

SECRET = "whsec_end_to_end"
REGION = "europe-west1"
UID = "user-e2e"


def process(name: str, args: list[str], env: dict[str, str], log: Path) -> Process:
    """A real child process in its own process group (the stack's own harness), started."""
    child = Process(name, [sys.executable, *args], env, str(log))
    child.start()
    return child


def wait_for(condition: Callable[[], Any], what: str, timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


@pytest.fixture
def running_system(topology: Topology, firestore_db: firestore.Client,
                   tmp_path: Path) -> Iterator[tuple[str, firestore.Client, list[Path]]]:
    """One ingress and one pipeline process on the test's own project, logging at DEBUG; both stopped afterwards."""
    port = free_port()
    logs = [tmp_path / "ingress.log", tmp_path / "pipeline.log"]
    ingress = process("ingress", ["-m", "ingress"], {
        "REGION": REGION, "PORT": str(port), "PAYNOW_WEBHOOK_SECRETS": SECRET, "GOOGLE_CLOUD_PROJECT": topology.project,
        "PUBSUB_TOPIC": topology.topic, "ADMIN_TOKEN": "admin-token-e2e", "PRIMARY_REGION": "us-central1",
        "SECONDARY_REGION": REGION, "LOG_LEVEL": "DEBUG"}, logs[0])
    pipeline = process("pipeline", ["-m", "pipeline", "--subscription", topology.subscription,
                                    "--dlq_topic", topology.dlq_topic, "--project", topology.project,
                                    "--region", "us-central1"], {"LOG_LEVEL": "DEBUG"}, logs[1])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(f"{url}/readyz"), "ingress /readyz", 60, logs)
        yield url, firestore_db, logs
    finally:
        ingress.stop(timeout=20)
        pipeline.stop(timeout=20)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def order_body(event_id: str) -> bytes:
    """PayNow's real ON_ORDER_COMPLETED delivery: 2 x 150 points + 1 x 20 points, and a subscription's line."""
    lines = [deliveries.order_line("line-1", "458255787102310400", 2),
             deliveries.order_line("line-2", "459935272365195264", 1),
             deliveries.order_line("line-3", "458253675014389760", 1, subscription_id="sub-e2e")]
    return deliveries.encode(deliveries.order_completed(event_id, "order-e2e", "cust-e2e", lines, uid=UID))


def refund_body(event_id: str, status: str) -> bytes:
    """PayNow's ON_REFUND of the order's payment: no customer, no lines."""
    return deliveries.encode(deliveries.refund(event_id, f"refund-{event_id}", "order-e2e", status))


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/webhooks/paynow", content=body, headers=signed_headers(SECRET, body), timeout=10)


def test_signed_webhook_becomes_exactly_one_credit_and_v1_goes_to_the_dlq(
        running_system: tuple[str, firestore.Client, list[Path]], topology: Topology) -> None:
    url, db, logs = running_system
    body = order_body("evt-e2e-1")
    first = post(url, body)
    assert first.status_code == 202, first.text
    assert first.json() == {"status": "accepted", "eventId": "evt-e2e-1", "region": REGION}

    event_ref = db.collection("webhookEvents").document("evt-e2e-1")
    event = wait_for(lambda: event_ref.get().to_dict(), "webhookEvents/evt-e2e-1", 180, logs)
    assert event["region"] == REGION
    assert event["workerRegion"] == "us-central1"
    assert event["status"] == "applied"
    assert event["expiresAt"] > event["processedAt"]

    wallet_ref = db.document(f"users/{UID}/wallet/points")
    expected = 2 * 150 + 20
    assert wallet_ref.get().to_dict()["paidBalance"] == expected
    ledger = {doc.id: doc.to_dict() for doc in db.collection(f"users/{UID}/ledger").stream()}
    assert set(ledger) == {"purchase:order-e2e"} and ledger["purchase:order-e2e"]["amount"] == expected
    order = db.document("orders/order-e2e").get().to_dict()  # the aggregate is the order's keys' claim
    assert (order["uid"], order["amount"], order["entries"]) == (UID, expected, ["purchase:order-e2e"])

    # The same webhook again (PayNow re-sends) and the same purchase under another event id: no new credit.
    assert post(url, body).status_code in (200, 202)
    assert post(url, order_body("evt-e2e-2")).status_code == 202
    second = db.collection("webhookEvents").document("evt-e2e-2")
    assert wait_for(lambda: second.get().to_dict(), "webhookEvents/evt-e2e-2", 60, logs)["status"] == \
        "duplicate_business_key"

    # A v1 message published straight onto the topic goes to the DLQ with its verdict.
    publisher = pubsub_v1.PublisherClient()
    v1 = encode_legacy(1, {"version": 1, "eventId": "evt-v1", "eventType": "ON_ORDER_COMPLETED",
                           "payloadJson": "{}"})
    publisher.publish(topology.topic, v1, eventId="evt-v1", version="1").result(timeout=30)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        def dlq_message() -> Any:
            response = subscriber.pull(subscription=topology.dlq_subscription, max_messages=10, timeout=5)
            return response.received_messages
        received = wait_for(dlq_message, "the v1 message on the DLQ", 60, logs)
    finally:
        subscriber.close()
    attributes = received[0].message.attributes
    assert attributes["verdict"] == "drop_incompatible"
    assert attributes["eventId"] == "evt-v1"

    assert wallet_ref.get().to_dict()["paidBalance"] == expected
    assert len(list(db.collection(f"users/{UID}/ledger").stream())) == 1

    # A refund still processing changes nothing; the completed one reverses the stored amount, once.
    assert post(url, refund_body("evt-refund-1", "processing")).status_code == 202
    assert post(url, refund_body("evt-refund-2", "completed")).status_code == 202
    assert post(url, refund_body("evt-refund-3", "completed")).status_code == 202
    statuses = wait_for(lambda: _statuses(db, "evt-refund-1", "evt-refund-2", "evt-refund-3"), "the refunds", 60,
                        logs)
    assert statuses[0] == "ignored" and sorted(statuses[1:]) == ["applied", "duplicate_business_key"]
    assert wallet_ref.get().to_dict()["paidBalance"] == 0
    order = db.document("orders/order-e2e").get().to_dict()
    assert order["uid"] == UID and order["amount"] == expected and order["refunded"] is True
    assert order["entries"] == ["purchase:order-e2e", "reversal:order-e2e"]


def _statuses(db: firestore.Client, *event_ids: str) -> list[str] | None:
    snaps = [db.document(f"webhookEvents/{e}").get() for e in event_ids]
    return [s.get("status") for s in snaps] if all(s.exists for s in snaps) else None


NAME, EMAIL, IP, COUNTRY = "Zephyrine Quillfeather", "zephyrine.quillfeather@example.org", "198.51.100.203", "AQ"
STEAM = "zephyrine_on_steam"


def identifiable_order(event_id: str, order_id: str, uid: str | None) -> bytes:
    """A real ON_ORDER_COMPLETED (the factory's) whose customer has a distinctive name, email, IP, billing address
    (the definitions' address field is its country) and Steam profile."""
    delivery = deliveries.order_completed(event_id, order_id, "cust-ident",
                                          [deliveries.order_line(f"{order_id}-1", "458255787102310400", 1)], uid=uid)
    body = delivery["body"]
    body.update(billing_name=NAME, billing_email=EMAIL, customer_ip=IP, billing_address_country=COUNTRY)
    body["customer"]["name"] = NAME
    body["customer"]["steam"]["name"] = STEAM
    return deliveries.encode(delivery)


def traces(blob: bytes) -> list[str]:
    found = [v for v in (NAME, EMAIL, IP, STEAM) if v.encode() in blob]
    return found + ([COUNTRY] if f'"{COUNTRY}"'.encode() in blob else [])


def test_personal_data_leaves_no_trace_in_messages_dead_letters_firestore_or_logs(
        running_system: tuple[str, firestore.Client, list[Path]], topology: Topology) -> None:
    """Issue 21's done-means: a signed order of an identifiable customer, once credited (uid) and once unmapped
    (dead-lettered); neither the Pub/Sub messages, the DLQ, Firestore nor any DEBUG log line holds the person."""
    url, db, logs = running_system
    subscriber = pubsub_v1.SubscriberClient()
    tap = topology.subscription + "-privacy-tap"  # a second subscription sees every message the ingress publishes
    subscriber.create_subscription(name=tap, topic=topology.topic)
    try:
        for event_id, order_id, uid in (("evt-pii-1", "order-pii-1", UID), ("evt-pii-2", "order-pii-2", None)):
            body = identifiable_order(event_id, order_id, uid)
            assert traces(body) == [NAME, EMAIL, IP, STEAM, COUNTRY]  # the control: all five are in the delivery
            assert post(url, body).status_code == 202
        wait_for(lambda: db.document("webhookEvents/evt-pii-1").get().exists, "the credited order", 180, logs)

        def dead_letters() -> Any:
            return subscriber.pull(subscription=topology.dlq_subscription, max_messages=10, timeout=5).received_messages
        [dead] = wait_for(dead_letters, "the unmapped order on the DLQ", 60, logs)
        assert dead.message.attributes["verdict"] == "unmapped_customer"
        published = subscriber.pull(subscription=tap, max_messages=10, timeout=5).received_messages
    finally:
        subscriber.delete_subscription(subscription=tap)
        subscriber.close()
    assert len(published) == 2
    for message in (*published, dead):
        assert traces(bytes(message.message.data) + str(dict(message.message.attributes)).encode()) == []
    wait_for(lambda: db.document("deadLetters/evt-pii-2").get().exists, "the durable dead letter", 30, logs)
    store = scan_firestore(db)
    assert "webhookEvents/evt-pii-1" in store and "deadLetters/evt-pii-2" in store
    assert traces(store.encode()) == []
    for log in logs:
        text = log.read_bytes()
        assert b"evt-pii-2" in text, f"{log.name} does not name the event: not the log this test means to read"
        assert traces(text) == [], log.name
