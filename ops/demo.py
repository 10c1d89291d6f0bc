"""`paynow demo`: one region end to end — a handful of signed webhooks in, wallets, ledger and DLQ out."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from google.cloud import firestore, pubsub_v1
from rich.console import Console
from rich.table import Table

from ops import dlq
from ops.signing import signed_headers
from ops.stack import PRIMARY, Config, Stack, home, shield_from_signals
from ops.traffic import WEBHOOK_PATH
from schemas import encode_legacy


def _order(event_id: str, event_type: str, order_id: str, customer: dict[str, Any],
           lines: list[tuple[str, int]]) -> dict[str, Any]:
    return {"id": event_id, "event_type": event_type, "data": {"order": {
        "id": order_id, "pretty_id": order_id.upper(), "customer": customer,
        "lines": [{"product_id": p, "quantity": q, "price": "9.99"} for p, q in lines]}}}


ALICE = {"id": "cus_demo_alice_paynow", "email": "alice@example.com", "metadata": {"uid": "user_alice"}}
BOB = {"id": "cus_demo_bob", "email": "bob@example.com", "metadata": {}}  # no uid: resolved by the mapping
STRANGER = {"id": "cus_demo_unknown", "email": "who@example.com", "metadata": {}}  # no uid, no mapping
WEBHOOKS: list[tuple[str, dict[str, Any]]] = [
    ("multi-line order (uid in payload)", _order("evt_demo_1", "ON_ORDER_COMPLETED", "ord_demo_1", ALICE,
                                                 [("458255405240287232", 1), ("459935272365195264", 3)])),
    ("the same webhook again (duplicate)", _order("evt_demo_1", "ON_ORDER_COMPLETED", "ord_demo_1", ALICE,
                                                  [("458255405240287232", 1), ("459935272365195264", 3)])),
    ("order by a mapped customer", _order("evt_demo_2", "ON_ORDER_COMPLETED", "ord_demo_2", BOB,
                                          [("458255787102310400", 1)])),
    ("subscription activation", {"id": "evt_demo_3", "event_type": "ON_SUBSCRIPTION_ACTIVATED", "data": {
        "subscription": {"id": "sub_demo_1", "product_id": "458253675014389760", "customer": ALICE,
                         "status": "ACTIVE", "current_period_start": "2026-11-01T00:00:00Z"}}}),
    ("refund of bob's order", _order("evt_demo_4", "ON_REFUND", "ord_demo_2", BOB, [("458255787102310400", 1)])),
    ("order by an unmapped customer", _order("evt_demo_5", "ON_ORDER_COMPLETED", "ord_demo_5", STRANGER,
                                             [("459935272365195264", 1)])),
]
V1 = {"version": 1, "eventId": "evt_demo_v1", "eventType": "ON_ORDER_COMPLETED",
      "payloadJson": json.dumps({"order": {"id": "ord_demo_v1"}})}


def _send(stack: Stack, console: Console) -> Table:
    answers = Table(title="webhooks sent", title_justify="left", header_style="bold")
    for column in ("what", "eventId", "answer", "region"):
        answers.add_column(column)
    with httpx.Client(timeout=10) as client:
        for what, payload in WEBHOOKS:
            body = json.dumps(payload).encode()
            response = client.post(stack.target + WEBHOOK_PATH, content=body,
                                   headers=signed_headers(stack.secret, body))
            answer = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                else {}
            answers.add_row(what, payload["id"], f"{response.status_code} {answer.get('status', answer.get('error'))}",
                            str(answer.get("region", "-")))
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(stack.topology.topic, encode_legacy(1, V1), version="1", eventId=V1["eventId"],
                      eventType=V1["eventType"]).result(timeout=30)
    answers.add_row("v1 message straight onto the topic", V1["eventId"], "published", "-")
    return answers


def _wait(db: firestore.Client, subscription: str, timeout: float = 90) -> float:
    """Until every event is processed or dead-lettered (evt_demo_5 and the v1 message go to the DLQ)."""
    started = time.monotonic()
    want_processed = {"evt_demo_1", "evt_demo_2", "evt_demo_3", "evt_demo_4"}
    want_dead = {"evt_demo_5", V1["eventId"]}
    while time.monotonic() - started < timeout:
        refs = [db.collection("webhookEvents").document(e) for e in sorted(want_processed)]
        done = {s.id for s in db.get_all(refs) if s.exists}
        dead = {x.event_id for x in dlq.inspect(subscription)}
        if done == want_processed and want_dead <= dead:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"events not processed after {timeout:.0f} s")


def _tables(db: firestore.Client, subscription: str) -> list[Table]:
    wallets = Table(title="wallets", title_justify="left", header_style="bold")
    for column in ("uid", "paidBalance", "sum(ledger)"):
        wallets.add_column(column, justify="left" if column == "uid" else "right")
    ledger = Table(title="ledger", title_justify="left", header_style="bold")
    for column in ("uid", "entryId", "amount", "kind", "eventId", "region"):
        ledger.add_column(column, justify="right" if column == "amount" else "left")
    sums: dict[str, int] = {}
    for doc in sorted(db.collection_group("ledger").stream(), key=lambda d: d.reference.path):
        uid = doc.reference.parent.parent.id  # type: ignore[union-attr]
        entry = doc.to_dict() or {}
        sums[uid] = sums.get(uid, 0) + int(entry.get("amount", 0))
        ledger.add_row(uid, doc.id, str(entry.get("amount")), str(entry.get("kind", "")), str(entry.get("eventId")),
                       str(entry.get("region", "")))
    for doc in sorted(db.collection_group("wallet").stream(), key=lambda d: d.reference.path):
        uid = doc.reference.parent.parent.id  # type: ignore[union-attr]
        wallets.add_row(uid, str((doc.to_dict() or {}).get("paidBalance")), str(sums.get(uid, 0)))
    return [wallets, ledger, dlq.table(dlq.inspect(subscription), title="DLQ")]


def run(console: Console) -> int:
    project = f"paynow-demo-{uuid.uuid4().hex[:6]}"  # a fresh project, also on reused emulators
    stack = Stack(Config(project=project, regions=(PRIMARY,), lb=False, standby=False, home=home() / "demo"))
    try:
        with console.status("starting emulators, ingress and pipeline…") as spinner:
            stack.start(progress=lambda step: spinner.update(f"starting: {step}…"))
        console.print(f"ingress {stack.target}, pipeline {PRIMARY}, project {project}")
        console.print(_send(stack, console))
        db = firestore.Client(project=project)
        try:
            with console.status("waiting for the pipeline…"):
                waited = _wait(db, stack.topology.dlq_subscription)
            console.print(f"processed in {waited:.1f} s")
            for table in _tables(db, stack.topology.dlq_subscription):
                console.print(table)
        finally:
            db.close()
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        shield_from_signals()
        with console.status("stopping everything…"):
            stack.stop()
    return 0
