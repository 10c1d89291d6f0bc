"""The reconciler against the fake Management API and an in-memory pipeline that keeps the ledger's exactly-once rule.

The in-memory pipeline commits an event only if `webhookEvents/{eventId}` does not exist yet (the pipeline's
create-precondition, DESIGN §3) and feeds what it commits to the independent ledger model; the judge is that model fed
with every delivery PayNow holds. The late-retry race uses the real ingress app for PayNow's copy.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from starlette.testclient import TestClient

from ingress import create_app as ingress_app
from ops.admin import reconcile as rc
from ops.admin.catalog import KNOWN_PRODUCTS
from ops.admin.paynow_api import ApiError, AuthError, ManagementApi
from ops.load.ledger_model import LedgerModel
from ops.local.fake_paynow import FakePayNow, order_from_body
from schemas import decode_envelope, deliveries
from tests.ingress.conftest import RecordingPublisher, make_settings, signed_headers
from tests.ops.local.paynow_fake import Checked, api

NOW = int(time.time() * 1000)
OLD = NOW - 3_600_000  # an hour ago: long past --min-age
CATALOG = {product: int(p["points"]) for product, p in KNOWN_PRODUCTS.items()}
ONE_TIME = "459935272365195264"  # 20 points
MONTHLY = "458253675014389760"  # 50 points a cycle


class Pipeline:
    """Stands in for the pipeline: create-precondition on webhookEvents/{eventId}, the model as the ledger rules."""

    def __init__(self, customers: dict[str, str] | None = None) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.dlq: dict[str, str] = {}
        self.model = LedgerModel(CATALOG, customers or {})
        self.published: list[tuple[bytes, dict[str, str], str]] = []
        self.commits = 0

    # Publish: what the reconciler calls; committed at once (the pipeline keeps up)
    def __call__(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str:
        self.published.append((data, attributes, ordering_key))
        self.commit(data, attributes)
        return str(len(self.published))

    def commit(self, data: bytes, attributes: dict[str, str]) -> bool:
        envelope = decode_envelope(data)
        event_id = envelope["eventId"]
        if event_id in self.events:  # the create-precondition fails: a duplicate, nothing committed
            return False
        delivery = json.loads(envelope["data"]["rawPayload"])
        self.events[event_id] = {"status": "applied", "source": attributes.get("source"),
                                 "region": envelope["region"]}
        body = delivery["body"]
        if delivery["event_type"] == "ON_ORDER_COMPLETED":
            self.orders[body["id"]] = {"purchased": True}
        self.model.add(delivery)
        self.commits += 1
        return True

    # LedgerView
    def event_docs(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {e: self.events[e] for e in event_ids if e in self.events}

    def order_docs(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {o: self.orders[o] for o in order_ids if o in self.orders}

    def dead_letters(self) -> dict[str, str]:
        return dict(self.dlq)


def order(n: int, uid: str = "u1", product: str = ONE_TIME, quantity: int = 1) -> dict[str, Any]:
    line = deliveries.order_line(f"8{n:05d}", product, quantity)
    return deliveries.order_completed(f"evt_o{n}", f"ord_{n}", "cus_1", [line], uid=uid)


def through_ingress(pipeline: Pipeline, delivery: dict[str, Any]) -> None:
    """PayNow's push: the real ingress app maps and publishes it; the pipeline commits what it published."""
    recorder = RecordingPublisher()
    body = deliveries.encode(delivery)
    with TestClient(ingress_app(make_settings(), publisher=recorder)) as http:
        assert http.post("/webhooks/paynow", content=body, headers=signed_headers(body)).status_code == 202
    for data, attributes, _key in recorder.messages:
        pipeline.commit(data, attributes)


def scenario() -> tuple[FakePayNow, Pipeline]:
    """Seen, failed (5xx until PayNow gave up), in the DLQ, pending and young, lost after a 2xx, unmappable, and a
    completed order PayNow never queued a webhook for."""
    fake = FakePayNow(page_size=4)
    pipeline = Pipeline()
    seen = order(1)
    fake.add_delivery(seen, created_ms=OLD, attempts=[(OLD, 202)])
    through_ingress(pipeline, seen)
    fake.add_delivery(order(2), state="failed", created_ms=OLD, attempts=[(OLD + i, 503) for i in range(5)])
    fake.add_delivery(order(3), state="failed", created_ms=OLD, attempts=[])  # never POSTed (both regions down)
    fake.add_delivery(order(4, uid="nobody!"), created_ms=OLD, attempts=[(OLD, 202)])
    pipeline.dlq["evt_o4"] = "unmapped_customer"
    fake.add_delivery(order(5), state="pending", created_ms=NOW - 5_000, attempts=[(NOW - 5_000, 500)],
                      next_retry_ms=NOW + 60_000)
    fake.add_delivery(order(6), created_ms=OLD, attempts=[(OLD, 202)])  # 2xx, then lost on our side
    bad = order(7)
    bad["body"]["lines"][0]["quantity"] = 0
    fake.add_delivery(bad, state="failed", created_ms=OLD, attempts=[(OLD, 400)])
    refund = deliveries.refund("evt_r2", "ref_2", "ord_2", "completed")
    fake.add_delivery(refund, state="failed", created_ms=OLD + 10, attempts=[(OLD + 10, None)])
    fake.add_order(order_from_body(order(9)["body"], fake.store_id, OLD))  # completed, no webhook ever queued
    return fake, pipeline


def run(fake: FakePayNow, pipeline: Pipeline, *, dry_run: bool = False, checked: Checked | None = None,
        **kwargs: Any) -> rc.Report:
    return rc.reconcile(api(fake, checked or Checked()), pipeline, store_id=fake.store_id, since_ms=NOW - 86_400_000,
                        publish=None if dry_run else pipeline, dry_run=dry_run, now_ms=NOW, **kwargs)


def by_event(report: rc.Report) -> dict[str, rc.Row]:
    return {r.delivery.event_id: r for r in report.rows}


def test_the_table_sorts_every_paynow_delivery_and_recovers_the_missing_ones() -> None:
    fake, pipeline = scenario()
    report = run(fake, pipeline)
    rows = by_event(report)
    assert {e: r.category for e, r in rows.items()} == {
        "evt_o1": rc.SEEN, "evt_o2": rc.MISSING, "evt_o3": rc.MISSING, "evt_o4": rc.DLQ, "evt_o5": rc.IN_FLIGHT,
        "evt_o6": rc.MISSING, "evt_o7": rc.UNMAPPABLE, "evt_r2": rc.MISSING}
    assert rows["evt_o2"].delivery.last_status == 503 and rows["evt_o2"].delivery.executions == 5
    assert rows["evt_o3"].delivery.last_status is None  # never POSTed
    assert rows["evt_r2"].delivery.last_status == 0  # PayNow got no answer
    assert rows["evt_o4"].verdict == "unmapped_customer"
    assert "quantity" in rows["evt_o7"].ledger_status
    assert [o["id"] for o in report.orphan_orders] == ["ord_9"]
    assert {r.delivery.event_id for r in report.recovered} == {"evt_o2", "evt_o3", "evt_o6", "evt_r2"}
    assert report.summary()["recovered now"] == 4
    # what was recovered went through the ingress mapping, marked as the reconciler's
    assert {a["source"] for _, a, _ in pipeline.published} == {"reconcile"}
    assert all(pipeline.events[e]["source"] == "reconcile" for e in ("evt_o2", "evt_o3", "evt_o6", "evt_r2"))
    judge = LedgerModel(CATALOG, {})
    for q in fake.queued:
        if q["payload"]["event_id"] in ("evt_o1", "evt_o2", "evt_o3", "evt_o6", "evt_r2"):
            judge.add(q["payload"])
    assert pipeline.model.keys() == judge.keys()
    assert pipeline.model.wallets() == {"u1": 20 + 20 - 20 + 20 + 20}  # ord_1, ord_2 (refunded), ord_3, ord_6


def test_a_second_run_changes_nothing() -> None:
    fake, pipeline = scenario()
    run(fake, pipeline)
    before = (dict(pipeline.events), pipeline.model.wallets(), len(pipeline.published))
    again = run(fake, pipeline)
    assert again.recovered == []
    assert again.count(rc.RECOVERED_BEFORE) == 4 and again.count(rc.SEEN) == 1
    assert (dict(pipeline.events), pipeline.model.wallets(), len(pipeline.published)) == before


def test_the_dry_run_changes_nothing() -> None:
    fake, pipeline = scenario()
    report = run(fake, pipeline, dry_run=True)
    assert pipeline.published == [] and set(pipeline.events) == {"evt_o1"}
    assert report.summary()["would recover"] == 4 and not report.ok
    assert report.recovered == []
    assert not any(method == "POST" for method, _ in fake.requests)  # not even a resend


def test_a_late_paynow_retry_racing_the_recovery_credits_once() -> None:
    """The reconciler reads "missing"; PayNow's retry lands (through the real ingress) before its publish."""
    fake = FakePayNow()
    pipeline = Pipeline()
    late = order(1, quantity=3)
    fake.add_delivery(late, state="pending", created_ms=OLD, attempts=[(OLD, 503)], next_retry_ms=NOW)
    raced: list[str] = []

    def publish(data: bytes, attributes: dict[str, str], key: str) -> str:
        if not raced:
            raced.append("retry")
            through_ingress(pipeline, late)  # PayNow's retry wins the race
        return pipeline(data, attributes, key)

    report = rc.reconcile(api(fake, Checked()), pipeline, store_id=fake.store_id, since_ms=0, publish=publish,
                          now_ms=NOW)
    assert [r.delivery.event_id for r in report.recovered] == ["evt_o1"]
    assert len(pipeline.published) == 1 and pipeline.commits == 1  # two messages, one commit
    assert pipeline.events["evt_o1"]["source"] is None  # the ingress's copy won
    assert pipeline.model.wallets() == {"u1": 60}
    # the two messages are the same event for the pipeline: same eventId, type, ordering key, data
    recorder = RecordingPublisher()
    body = deliveries.encode(late)
    with TestClient(ingress_app(make_settings(), publisher=recorder)) as http:
        http.post("/webhooks/paynow", content=body, headers=signed_headers(body))
    (ingress_data, ingress_attributes, ingress_key), = recorder.messages
    ours_data, ours_attributes, ours_key = pipeline.published[0]
    assert ours_key == ingress_key
    assert {k: v for k, v in ours_attributes.items() if k not in ("source", "region")} == \
        {k: v for k, v in ingress_attributes.items() if k != "region"}
    theirs, ours = decode_envelope(ingress_data), decode_envelope(ours_data)
    assert ours["data"] == theirs["data"] and ours["eventId"] == theirs["eventId"]
    # and when the recovery wins instead, the late retry commits nothing
    other = Pipeline()
    rc.reconcile(api(fake, Checked()), other, store_id=fake.store_id, since_ms=0, publish=other, now_ms=NOW)
    through_ingress(other, late)
    assert other.commits == 1 and other.events["evt_o1"]["source"] == "reconcile"
    assert other.model.wallets() == {"u1": 60}


def test_blackout_unit_drill_nothing_lost_nothing_doubled() -> None:
    """The drill at unit level: PayNow sends a mix; during a blackout of both regions its retries run out; the
    reconciler recovers every one; the ledger equals the independent model fed with all PayNow holds."""
    fake = FakePayNow(page_size=10)
    pipeline = Pipeline(customers={"cus_m": "u_mapped"})
    sends: list[dict[str, Any]] = []
    for n in range(60):
        uid = f"u{n % 7}"
        sends.append(order(n, uid=uid, quantity=1 + n % 3))
        if n % 4 == 0:
            status = ("completed", "failed")[n % 8 // 4]
            sends.append(deliveries.refund(f"evt_r{n}", f"ref_{n}", f"ord_{n}", status))
        if n % 5 == 0:
            sends.append(deliveries.chargeback(f"evt_cb{n}", f"pay_{n}", f"ord_{n}", "won", closed=True))
        if n % 6 == 0:
            sends.append(deliveries.subscription_cycle(f"evt_s{n}", f"sub_{n % 3}", MONTHLY, n, "cus_m"))
        if n % 9 == 0:
            sends.append(deliveries.no_effect("ON_PAYMENT_COMPLETED", f"evt_p{n}", customer_id="cus_m"))
    blackout = range(len(sends) // 3, len(sends) // 3 + 25)
    for i, delivery in enumerate(sends):
        at = OLD + i * 1000
        if i in blackout:  # both regions drained: 503 from the LB until PayNow gives up, or no connection at all
            attempts = [(at + k, 503) for k in range(6)] if i % 2 else [(at + k, None) for k in range(6)]
            fake.add_delivery(delivery, state="failed", created_ms=at, attempts=attempts)
        else:
            fake.add_delivery(delivery, created_ms=at, attempts=[(at, 202)])
            through_ingress(pipeline, delivery)
    lost = {str(sends[i]["event_id"]) for i in blackout}
    assert not lost & set(pipeline.events)
    report = run(fake, pipeline)
    assert {r.delivery.event_id for r in report.recovered} == lost
    judge = LedgerModel(CATALOG, {"cus_m": "u_mapped"})
    for delivery in sends:
        judge.add(delivery)
    assert pipeline.model.keys() == judge.keys()
    assert pipeline.model.wallets() == judge.wallets()
    assert set(pipeline.events) == {str(d["event_id"]) for d in sends}
    again = run(fake, pipeline)
    assert again.recovered == [] and again.count(rc.MISSING) == 0


def test_rate_limits_are_waited_out_as_paynow_asks() -> None:
    fake, _ = scenario()
    sleeps: list[float] = []
    client = api(fake, Checked(), sleeps=sleeps)
    fake.inject(429, count=2, retry_after="7")
    assert client.webhooks(fake.store_id)
    assert sleeps == [7.0, 7.0]
    fake.inject(429, retry_after="3600")
    client.webhooks(fake.store_id)
    assert sleeps[-1] == 30.0  # capped at the policy's max_delay
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    fake.inject(429, retry_after=date)
    client.webhooks(fake.store_id)
    assert 3.0 <= sleeps[-1] <= 5.0


def test_server_errors_are_retried_with_backoff_then_reported() -> None:
    fake, pipeline = scenario()
    sleeps: list[float] = []
    fake.inject(503, count=3)
    report = rc.reconcile(api(fake, Checked(), sleeps=sleeps), pipeline, store_id=fake.store_id, since_ms=0,
                          dry_run=True, now_ms=NOW)
    assert report.count(rc.MISSING) == 4  # the answer is complete despite the errors
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2] and 0.25 <= sleeps[0] <= 0.5
    fake.inject(500, count=6)
    with pytest.raises(ApiError, match="still failing after 6 attempts"):
        api(fake, Checked(), sleeps=[]).webhooks(fake.store_id)


def test_a_bad_api_key_is_a_clear_error_naming_the_setting() -> None:
    fake, pipeline = scenario()
    with pytest.raises(AuthError, match="PAYNOW_API_KEY") as refused:
        rc.reconcile(api(fake, Checked(), key="pnapi_wrong_secret_value"), pipeline, store_id=fake.store_id,
                     since_ms=0, dry_run=True)
    assert "401" in str(refused.value) and "pnapi_wrong_secret_value" not in str(refused.value)
    with pytest.raises(AuthError, match="PAYNOW_API_KEY"):
        ManagementApi("")
    with pytest.raises(ApiError, match="PAYNOW_API_KEY"):
        rc.settings_from(argparse.Namespace(store="1", project="p", api_url=None), None)


def test_the_window_and_one_webhook() -> None:
    fake, pipeline = scenario()
    recent = rc.reconcile(api(fake, Checked()), pipeline, store_id=fake.store_id, since_ms=NOW - 60_000,
                          dry_run=True, now_ms=NOW)
    assert [r.delivery.event_id for r in recent.rows] == ["evt_o5"]  # only the young pending one
    refunds = fake.subscription("OnRefund")["id"]
    only = rc.reconcile(api(fake, Checked()), pipeline, store_id=fake.store_id, since_ms=0, webhook_ids=[refunds],
                        dry_run=True, now_ms=NOW)
    assert [r.delivery.event_id for r in only.rows] == ["evt_r2"]


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), ("2d", 172800),
                                               ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert rc.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "0h", "-1h", "1w", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        rc.parse_duration(text)


def test_the_table_shows_the_categories() -> None:
    from rich.console import Console

    fake, pipeline = scenario()
    report = run(fake, pipeline)
    console = Console(width=200, record=True)
    console.print(report.table())
    console.print(report.details())
    text = console.export_text()
    for label in (rc.SEEN, rc.MISSING, rc.DLQ, rc.NO_DELIVERY, "recovered now", "503", "unmapped_customer",
                  "ord_9"):
        assert label in text


def test_orders_are_listed_before_the_history_and_young_ones_are_not_judged() -> None:
    """An order completed while the reconciler reads would otherwise look as if PayNow never queued its webhook."""
    fake, pipeline = scenario()
    fake.add_order(order_from_body(order(10)["body"], fake.store_id, NOW - 5_000))  # completed seconds ago
    report = run(fake, pipeline, dry_run=True)
    assert [o["id"] for o in report.orphan_orders] == ["ord_9"]
    calls = [path for _, path in fake.requests]
    assert calls.index(f"/v1/stores/{fake.store_id}/orders") < min(i for i, p in enumerate(calls) if "history" in p)
    settled = run(fake, pipeline, dry_run=True, min_age_s=0)
    assert sorted(o["id"] for o in settled.orphan_orders) == ["ord_10", "ord_9"]
