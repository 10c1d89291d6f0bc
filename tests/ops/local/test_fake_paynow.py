"""The fake PayNow Management API: every response valid against PayNow's spec, pages and cursors, faults, the feed."""
from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from ops.admin.paynow_api import ManagementApi
from ops.local.fake_paynow import FakePayNow, TrafficFeed, from_traffic_record, iso, management_event
from schemas import deliveries
from tests.ops.local.paynow_fake import Checked, api, client, response_validator, store_path

NOW = int(time.time() * 1000)
ONE_TIME = "459935272365195264"


def order(n: int, *, uid: str = "u1") -> dict:
    line = deliveries.order_line(f"9{n:06d}", ONE_TIME, 1)
    return deliveries.order_completed(f"evt_{n}", f"ord_{n}", "cus_1", [line], uid=uid)


def filled(n: int = 3) -> FakePayNow:
    fake = FakePayNow(page_size=25)
    for i in range(n):
        fake.add_delivery(order(i), state=("success", "failed", "pending")[i % 3], created_ms=NOW - 1000 * (n - i),
                          attempts=[(NOW - 1000, 503), (NOW - 500, None)] if i % 3 else [(NOW - 900, 202)],
                          next_retry_ms=NOW + 60_000 if i % 3 == 2 else None)
    fake.add_delivery(deliveries.refund("evt_r", "ref_1", "ord_0", "completed"), created_ms=NOW)
    fake.add_delivery(deliveries.chargeback("evt_c", "pay_1", "ord_1", "won", closed=True), created_ms=NOW)
    fake.add_delivery(deliveries.subscription_cycle("evt_s", "sub_1", "458253675014389760", 2, "cus_1", uid="u1",
                                                    renewed=True), created_ms=NOW)
    return fake


def test_every_endpoint_answers_within_paynows_spec() -> None:
    fake = filled(7)
    checked = Checked()
    http = client(fake, checked)
    key = {"Authorization": f"APIKey {fake.api_key}"}
    hooks = http.get(store_path(fake, "webhooks"), headers=key).json()
    assert {h["subscribed_to"] for h in hooks} == {"OnOrderCompleted", "OnRefund", "OnChargebackClosed",
                                                     "OnSubscriptionRenewed"}
    orders_hook = next(h["id"] for h in hooks if h["subscribed_to"] == "OnOrderCompleted")
    for state in ("all", "success", "pending", "failed"):
        for page in (1, 2):
            http.get(store_path(fake, f"webhooks/{orders_hook}/history"), params={"state": state, "page": page},
                     headers=key)
    for hook in hooks:
        http.get(store_path(fake, f"webhooks/{hook['id']}/history"), headers=key)
    first = fake.queued[0]["id"]
    assert http.post(store_path(fake, "webhooks/resend"), json={"webhook_id": first}, headers=key).status_code == 204
    assert http.post(store_path(fake, "webhooks/resend"), json={"webhook_id": "1"}, headers=key).status_code == 404
    assert fake.resends == [first]
    listed = http.get(store_path(fake, "orders"), params={"status": ["completed", "refunded"], "limit": 3},
                      headers=key).json()
    http.get(store_path(fake, "orders"), params={"before": listed[-1]["id"], "limit": 100}, headers=key)
    http.get(store_path(fake, "orders"), params={"after": listed[-1]["id"], "asc": "true"}, headers=key)
    assert http.get(store_path(fake, "orders/ord_0"), headers=key).json()["status"] == "refunded"
    for status, call in ((404, lambda: http.get(store_path(fake, "orders/nope"), headers=key)),
                         (401, lambda: http.get(store_path(fake, "orders"))),
                         (401, lambda: http.get(store_path(fake, "orders"), headers={"Authorization": "APIKey x"})),
                         (404, lambda: http.get("/v1/stores/1/orders", headers=key)),
                         (400, lambda: http.get(store_path(fake, f"webhooks/{orders_hook}/history"),
                                                params={"state": "done"}, headers=key)),
                         (400, lambda: http.get(store_path(fake, "orders"), params={"limit": 101}, headers=key))):
        assert call().status_code == status
    fake.inject(429, retry_after="3")
    fake.inject(503)
    limited = http.get(store_path(fake, "orders"), headers=key)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert http.get(store_path(fake, "orders"), headers=key).status_code == 503
    statuses = {s for _, _, s in checked.responses}
    assert statuses == {200, 204, 400, 401, 404, 429, 503}
    assert len(checked.responses) >= 20  # each one validated by the hook


def test_the_validator_catches_a_response_outside_the_spec() -> None:
    """Planted mistakes: a state PayNow does not have, a missing required field, a null FlakeId."""
    fake = filled(1)
    item = {k: v for k, v in fake.queued[0].items() if not k.startswith("_")}
    validator = response_validator("GET", f"/v1/stores/{fake.store_id}/webhooks/1/history", 200)
    assert validator is not None
    validator.validate({"page": 1, "history": [item]})
    for broken in ({**item, "state": "delivered"}, {k: v for k, v in item.items() if k != "executions"},
                   {**item, "webhook_id": None}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({"page": 1, "history": [broken]})
    orders = response_validator("GET", f"/v1/stores/{fake.store_id}/orders", 200)
    assert orders is not None
    bad = {k: v for k, v in fake.orders["ord_0"].items() if not k.startswith("_")}
    bad["lines"][0]["subscription_id"] = None
    with pytest.raises(jsonschema.ValidationError):
        orders.validate([bad])


def test_history_pages_until_an_empty_page_or_the_end_of_the_window() -> None:
    fake = FakePayNow(page_size=25)
    for i in range(60):
        fake.add_delivery(order(i), created_ms=NOW - 60_000 + 1000 * i)
    checked = Checked()
    client_api = api(fake, checked)
    hook = fake.subscription("OnOrderCompleted")["id"]
    everything = list(client_api.history(fake.store_id, hook, since_ms=0))
    assert sorted(d["payload"]["event_id"] for d in everything) == sorted(f"evt_{i}" for i in range(60))
    assert client_api.requests == 4  # 25 + 25 + 10 + the empty page 4
    checked.responses.clear()
    recent = list(client_api.history(fake.store_id, hook, since_ms=NOW - 30_000))  # the newest 30
    assert len(recent) == 30
    assert len(checked.responses) == 3  # page 2 is partly old, page 3 wholly old: no page 4


def test_orders_cursor_walks_every_order_once_newest_first() -> None:
    fake = FakePayNow()
    for i in range(130):
        fake.add_delivery(order(i), created_ms=NOW - 300_000 + 1000 * i)
    fake.add_delivery(deliveries.refund("evt_ref", "ref", "ord_5", "completed"), created_ms=NOW)
    checked = Checked()
    client_api = api(fake, checked)
    ids = [o["id"] for o in client_api.orders(fake.store_id, since_ms=0, limit=50)]
    assert len(ids) == len(set(ids)) == 129  # ord_5 is refunded now
    assert ids[0] == "ord_129" and ids[-1] == "ord_0"
    assert client_api.requests == 3
    both = [o["id"] for o in client_api.orders(fake.store_id, since_ms=0, statuses=("completed", "refunded"))]
    assert len(both) == 130
    window = [o["id"] for o in client_api.orders(fake.store_id, since_ms=NOW - 220_500, limit=50)]
    assert window == [f"ord_{i}" for i in range(129, 79, -1)]
    assert client_api.requests == 3 + 2 + 2  # the second page of the window is already older: no third


def test_traffic_records_become_history_items(tmp_path: Path) -> None:
    """The generator's record format (ops/load/traffic.py send_webhook on issue-f-ops) -> queued webhooks."""
    ok = {"kind": "webhook", "scenario": "order", "eventId": "evt_1", "eventType": "ON_ORDER_COMPLETED",
          "delivery": order(1), "sentAt": NOW - 5000, "ok": True, "status": 202, "region": "us-central1",
          "attempts": [{"at": NOW - 5000, "status": 503, "ms": 3.0}, {"at": NOW - 4000, "status": 202, "ms": 2.0}]}
    gave_up = {**ok, "eventId": "evt_2", "delivery": order(2), "ok": False, "status": None, "sentAt": NOW - 3000,
               "attempts": [{"at": NOW - 3000 + i, "status": None, "error": "ConnectError", "ms": 1.0}
                            for i in range(6)]}
    future = {**ok, "eventId": "evt_3", "delivery": deliveries.delivery("ON_SOMETHING_NEW", "evt_3", {"x": 1})}
    legacy = {"kind": "legacy", "eventId": "evt_4", "version": 2, "delivery": order(4), "ok": True}
    assert from_traffic_record(legacy) is None
    args = from_traffic_record(gave_up)
    assert args is not None and args["state"] == "failed" and len(args["attempts"]) == 6
    assert management_event("ON_SOMETHING_NEW") is None and management_event("ON_REFUND") == "OnRefund"

    log = tmp_path / "traffic-1.jsonl"
    lines = [json.dumps(r) for r in ({"kind": "run", "runId": "r"}, ok, gave_up, future, legacy)]
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # the last record half written
    fake = FakePayNow()
    feed = TrafficFeed(fake, tmp_path)
    assert feed.poll() == 2
    with log.open("a") as f:
        f.write(lines[3][20:] + "\n" + lines[4] + "\n")
    assert feed.poll() == 0  # a future type and a legacy publish: nothing PayNow would list
    assert feed.poll() == 0
    states = {q["payload"]["event_id"]: (q["state"], [e["status_code"] for e in q["executions"]])
              for q in fake.queued}
    assert states == {"evt_1": ("success", [503, 202]), "evt_2": ("failed", [0] * 6)}
    assert fake.queued[1]["created_at"] == iso(NOW - 3000)
    assert set(fake.orders) == {"ord_1", "ord_2"}  # PayNow completed both, whatever happened to the webhook


def test_a_client_on_the_fake_validates_its_own_calls() -> None:
    fake = filled(2)
    checked = Checked()
    client_api: ManagementApi = api(fake, checked)
    assert {w["type"] for w in client_api.webhooks(fake.store_id)} == {"json_v1"}
    assert all(s == 200 for _, _, s in checked.responses)


def test_the_vendored_spec_is_an_unchanged_copy() -> None:
    """schemas/vendor/paynow/management-api.json is byte-identical to the team's reference copy."""
    from importlib import resources

    reference = Path(__file__).resolve().parents[4] / "shared" / "paynow" / "management-api.json"
    assert reference.exists(), f"the team's reference copy {reference} is missing"
    vendored = resources.files("schemas").joinpath("vendor/paynow/management-api.json").read_bytes()
    assert vendored == reference.read_bytes()
