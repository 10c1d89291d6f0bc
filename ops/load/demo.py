"""`paynow demo`: one region end to end — a handful of signed webhooks in, wallets, ledger and DLQ out."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
import httpx
from google.cloud import firestore
from rich.console import Console
from rich.table import Table

from ops.admin import dlq
from ops.admin.catalog import KNOWN_PRODUCTS, points
from ops.load.ledger_model import LedgerModel
from ops.load.traffic import WEBHOOK_PATH
from ops.local.stack import PRIMARY, Config, Stack, home, shield_from_signals
from schemas import deliveries, encode_legacy
from schemas.signing import signed_headers

CUSTOMERS = {"alice": "cus_demo_alice_paynow", "bob": "cus_demo_bob", "stranger": "cus_demo_unknown"}
# alice's checkout names her uid; bob has none, but `paynow up`/the demo stack maps his customer id; nobody maps the
# stranger. Every webhook is a real PayNow delivery from the factory built on PayNow's published definitions.
_line = deliveries.order_line
FIRST = deliveries.order_completed(
    "evt_demo_1", "ord_demo_1", CUSTOMERS["alice"],
    [_line("line_demo_1", "458255405240287232", 1), _line("line_demo_2", "459935272365195264", 3),
     _line("line_demo_3", "458253675014389760", 1, subscription_id="sub_demo_1")], uid="user_alice")
WEBHOOKS: list[tuple[str, dict[str, Any]]] = [
    ("order: 50 + 3 × 20 points and a subscription line (uid in checkout)", FIRST),
    ("the same webhook again (duplicate)", FIRST),
    ("order by a mapped customer", deliveries.order_completed(
        "evt_demo_2", "ord_demo_2", CUSTOMERS["bob"], [_line("line_demo_4", "458255787102310400", 1)])),
    ("subscription activated: cycle 1 of the line above", deliveries.subscription_cycle(
        "evt_demo_3", "sub_demo_1", "458253675014389760", 1, CUSTOMERS["alice"], uid="user_alice")),
    ("refund of bob's order, still processing (no effect)", deliveries.refund(
        "evt_demo_4", "ref_demo_1", "ord_demo_2", "processing", customer_id=CUSTOMERS["bob"])),
    ("the same refund, completed", deliveries.refund(
        "evt_demo_5", "ref_demo_1", "ord_demo_2", "completed", customer_id=CUSTOMERS["bob"])),
    ("a payment notice (ignored)", deliveries.no_effect(
        "ON_PAYMENT_COMPLETED", "evt_demo_6", customer_id=CUSTOMERS["alice"], order_id="ord_demo_1")),
    ("order by an unmapped customer", deliveries.order_completed(
        "evt_demo_7", "ord_demo_7", CUSTOMERS["stranger"], [_line("line_demo_5", "459935272365195264", 1)])),
]
V1 = {"version": 1, "eventId": "evt_demo_v1", "eventType": "ON_ORDER_COMPLETED",
      "payloadJson": json.dumps(FIRST["body"])}
DEAD = {"evt_demo_7", V1["eventId"]}  # the unmapped customer's order, and the retired v1 message


def _send(stack: Stack, model: LedgerModel) -> Table:
    """POST every webhook; each one answered 2xx goes to the independent model too (what the ledger should be)."""
    answers = Table(title="webhooks sent", title_justify="left", header_style="bold")
    for column in ("what", "eventId", "event_type", "answer", "region"):
        answers.add_column(column)
    with httpx.Client(timeout=10) as client:
        for what, delivery in WEBHOOKS:
            body = deliveries.encode(delivery)
            response = client.post(stack.target + WEBHOOK_PATH, content=body,
                                   headers=signed_headers(stack.secret, body))
            answer = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                else {}
            if 200 <= response.status_code < 300:
                model.add(delivery)
            answers.add_row(what, delivery["event_id"], delivery["event_type"],
                            f"{response.status_code} {answer.get('status', answer.get('error'))}",
                            str(answer.get("region", "-")))
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(stack.topology.topic, encode_legacy(1, V1), version="1", eventId=V1["eventId"],
                      eventType=V1["eventType"]).result(timeout=30)
    answers.add_row("v1 message straight onto the topic", str(V1["eventId"]), str(V1["eventType"]), "published", "-")
    return answers


def _wait(db: firestore.Client, timeout: float = 90) -> float:
    """Until every event is processed or dead-lettered (evt_demo_7 and the v1 message go to the DLQ)."""
    started = time.monotonic()
    want_processed = {d["event_id"] for _, d in WEBHOOKS} - DEAD
    want_dead = DEAD
    while time.monotonic() - started < timeout:
        refs = [db.collection("webhookEvents").document(e) for e in sorted(want_processed)]
        done = {s.id for s in db.get_all(refs) if s.exists}
        dead = set(dlq.unresolved(db))
        if done == want_processed and want_dead <= dead:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"events not processed after {timeout:.0f} s")


def _tables(db: firestore.Client, model: LedgerModel) -> list[Table]:
    wallets = Table(title="wallets (model: the independent model of the rules, fed the accepted webhooks)",
                    title_justify="left", header_style="bold")
    for column in ("uid", "paidBalance", "sum(ledger)", "model"):
        wallets.add_column(column, justify="left" if column == "uid" else "right")
    ledger = Table(title="ledger", title_justify="left", header_style="bold")
    for column in ("uid", "entryId", "amount", "kind", "eventId", "region"):
        ledger.add_column(column, justify="right" if column == "amount" else "left")
    sums: dict[str, int] = {}
    for doc in sorted(db.collection_group("ledger").stream(), key=lambda d: d.reference.path):
        uid = doc.reference.parent.parent.id
        entry = doc.to_dict() or {}
        sums[uid] = sums.get(uid, 0) + int(entry.get("amount", 0))
        ledger.add_row(uid, doc.id, str(entry.get("amount")), str(entry.get("kind", "")), str(entry.get("eventId")),
                       str(entry.get("region", "")))
    for doc in sorted(db.collection_group("wallet").stream(), key=lambda d: d.reference.path):
        uid = doc.reference.parent.parent.id
        wallets.add_row(uid, str((doc.to_dict() or {}).get("paidBalance")), str(sums.get(uid, 0)),
                        str(model.wallets().get(uid, 0)))
    letters = dlq.select(dlq.FirestoreLetters(db), now_ms=int(time.time() * 1000))
    return [wallets, ledger, dlq.table(letters, now_ms=int(time.time() * 1000), title="dead letters")]


def run(console: Console) -> int:
    project = f"paynow-demo-{uuid.uuid4().hex[:6]}"  # a fresh project, also on reused emulators
    stack = Stack(Config(project=project, regions=(PRIMARY,), lb=False, standby=False, home=home() / "demo"))
    try:
        with console.status("starting emulators, ingress and pipeline…") as spinner:
            stack.start(progress=lambda step: spinner.update(f"starting: {step}…"))
        console.print(f"ingress {stack.target}, pipeline {PRIMARY}, project {project}")
        model = LedgerModel(points(KNOWN_PRODUCTS), stack.config.mappings)
        console.print(_send(stack, model))
        db = firestore.Client(project=project)
        try:
            with console.status("waiting for the pipeline…"):
                waited = _wait(db)
            console.print(f"processed in {waited:.1f} s")
            for table in _tables(db, model):
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
