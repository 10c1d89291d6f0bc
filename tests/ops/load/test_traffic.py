"""The traffic mix (real PayNow deliveries, every scenario), the PayNow-like retry loop, pacing and the JSONL record.

The mix is judged against PayNow's published definitions (schemas.deliveries.validate) and by reading its
deliveries back, never by what the ledger should do with them: that is the independent model's job.
"""
from __future__ import annotations

import asyncio
import copy
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.admin.catalog import KNOWN_PRODUCTS
from ops.load import traffic, traffic_log
from ops.load.ledger_model import LedgerModel
from schemas import (
    ORDERING_KEYS,
    IncompatibleVersion,
    decode_envelope,
    deliveries,
    envelope_from_payload,
    ordering_key,
    personal,
)
from schemas.signing import signature

N = 300  # "a few hundred actions" must cover every scenario


def _actions(n: int = N, **kwargs: Any) -> list[traffic.Action]:
    mix = traffic.Mix(seed=7, run_id="t1", mapped_customers=traffic.Mix.mapped_customers_for("t1"), **kwargs)
    return [mix.next() for _ in range(n)]


def _hooks(actions: list[traffic.Action]) -> list[traffic.Webhook]:
    return [a for a in actions if isinstance(a, traffic.Webhook)]


@pytest.mark.parametrize("seed", [7, 11, 2026])
def test_every_delivery_is_a_valid_paynow_delivery_and_maps_to_an_envelope(seed: int) -> None:
    mix = traffic.Mix(seed=seed, run_id="v", mapped_customers=traffic.Mix.mapped_customers_for("v"))
    hooks = _hooks([mix.next() for _ in range(N)])
    assert len(hooks) > 0.9 * N * 0.9
    for hook in hooks:
        assert hook.body == deliveries.encode(hook.delivery)
        if hook.event_type in traffic.FUTURE_TYPES:  # not (yet) in PayNow's enum: nothing to validate against
            assert hook.event_type not in deliveries.event_type_enum()
        else:
            deliveries.validate(hook.delivery)
        envelope = envelope_from_payload(hook.body, timestamp_ms=1, region="us-central1")
        assert envelope["eventId"] == hook.event_id and envelope["eventType"] == hook.event_type


def test_a_few_hundred_actions_cover_every_scenario() -> None:
    actions = _actions()
    assert set(traffic.WEIGHTS) | traffic.HELD == {a.scenario for a in actions}
    hooks = _hooks(actions)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for hook in hooks:
        by_type[hook.event_type].append(hook.delivery["body"])
    assert {b["status"] for b in by_type["ON_REFUND"]} == set(traffic.REFUND_STATUSES) == {
        "created", "approved", "processing", "completed", "canceled", "failed"}
    assert by_type["ON_CHARGEBACK"]
    assert {b["chargeback_status"] for b in by_type["ON_CHARGEBACK_CLOSED"]} == {"won", "lost"}
    assert set(traffic.NO_EFFECT_TYPES) <= set(by_type)
    assert {t for t in by_type if t.startswith("ON_DELIVERY_ITEM_")} == {
        t for t in deliveries.defined_types() if t.startswith("ON_DELIVERY_ITEM_")}
    assert {t for t in by_type if t.startswith("ON_TRIAL_")} == {"ON_TRIAL_ACTIVATED", "ON_TRIAL_COMPLETED",
                                                                  "ON_TRIAL_CANCELED"}
    orders = by_type["ON_ORDER_COMPLETED"]
    assert {len(b["lines"]) for b in orders} >= {1, 2, 3, 4, 5}
    assert any(line["subscription_id"] for b in orders for line in b["lines"])
    assert any(line["product_id"] == "321641745958305792" for b in orders for line in b["lines"])  # retired
    assert not KNOWN_PRODUCTS["321641745958305792"]["active"]
    legacy = [a for a in actions if isinstance(a, traffic.Legacy)]
    assert {a.version for a in legacy} == {1, 2}


def test_subscriptions_run_cycle_1_2_3_in_order() -> None:
    cycles: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for hook in _hooks(_actions(600)):
        if hook.event_type in ("ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED") \
                and hook.scenario not in ("duplicate", "resend"):
            body = hook.delivery["body"]
            cycles[body["id"]].append((hook.event_type, body["billing_cycle_sequence"]))
    assert cycles and max(len(c) for c in cycles.values()) >= 3
    for seen in cycles.values():
        assert [n for _, n in seen] == list(range(1, len(seen) + 1))
        assert [t for t, _ in seen] == ["ON_SUBSCRIPTION_ACTIVATED"] + ["ON_SUBSCRIPTION_RENEWED"] * (len(seen) - 1)


def test_the_mix_is_reproducible_from_its_seed() -> None:
    first = [(a.scenario, a.event_id) for a in _actions()]
    assert first == [(a.scenario, a.event_id) for a in _actions()]


def test_duplicates_are_byte_for_byte_and_resends_change_only_the_event_id() -> None:
    seen: dict[str, traffic.Webhook] = {}
    duplicates = resends = 0
    for hook in _hooks(_actions()):
        if hook.scenario == "duplicate":
            assert seen[hook.event_id].body == hook.body
            duplicates += 1
        elif hook.scenario == "resend":
            assert hook.event_id not in seen
            assert any(o.delivery["body"] == hook.delivery["body"] and o.event_type == hook.event_type
                       for o in seen.values())
            resends += 1
        seen.setdefault(hook.event_id, hook)
    assert duplicates and resends


def test_early_refunds_come_before_their_order() -> None:
    first: dict[tuple[str, str], int] = {}
    hooks = _hooks(_actions())
    for i, hook in enumerate(hooks):
        body = hook.delivery["body"]
        if hook.event_type == "ON_ORDER_COMPLETED":
            first.setdefault((body["id"], "order"), i)
        elif hook.event_type == "ON_REFUND":
            first.setdefault((body["order_id"], "refund"), i)
    early = [h for h in hooks[:-20] if h.scenario == "refund_early"]
    assert early
    for refund in early:
        order = refund.delivery["body"]["order_id"]
        assert refund.delivery["body"]["status"] == "completed"
        assert first[(order, "order")] > first[(order, "refund")]


def test_one_order_is_resolved_once_by_checkout_uid_and_once_by_the_customer_mapping() -> None:
    mapped = traffic.Mix.mapped_customers_for("t1")
    hooks = _hooks(_actions())
    by_order: dict[str, list[traffic.Webhook]] = defaultdict(list)
    for hook in hooks:
        if hook.event_type == "ON_ORDER_COMPLETED" and hook.scenario in ("order_uid_and_mapping", "order_via_mapping"):
            by_order[hook.delivery["body"]["id"]].append(hook)
    pairs = [v for v in by_order.values() if len(v) == 2]
    assert pairs
    for with_uid, via_mapping in pairs:
        customer = with_uid.delivery["body"]["customer"]["id"]
        assert with_uid.delivery["body"]["checkout"]["metadata"] == {"uid": mapped[customer]}
        assert via_mapping.delivery["body"]["checkout"]["metadata"] == {}
        assert via_mapping.event_id != with_uid.event_id
        assert via_mapping.delivery["body"]["lines"] == with_uid.delivery["body"]["lines"]


def test_the_model_finds_exactly_the_unmapped_scenarios_and_credits_only_intended_users() -> None:
    """The mix's intent (who each delivery is for) agrees with the independent model's reading of it."""
    mapped = traffic.Mix.mapped_customers_for("t1")
    mix = traffic.Mix(seed=7, run_id="t1", mapped_customers=mapped)
    actions = [mix.next() for _ in range(N)]
    model = LedgerModel(mix.catalog(), mapped)
    for a in actions:
        if a.delivery is not None:  # a v1 message has none: it never reaches the ledger
            model.add(a.delivery)
    unmapped = model.unmapped()
    for hook in _hooks(actions):
        if hook.event_id in unmapped:
            source = hook.scenario if hook.scenario != "duplicate" else "unmapped"
            want = "unmapped_product" if traffic.UNKNOWN_PRODUCT in hook.body.decode() else "unmapped_customer"
            assert unmapped[hook.event_id] == want, (hook.scenario, source)
            assert hook.uid is None or want == "unmapped_product"
    assert set(unmapped.values()) == {"unmapped_customer", "unmapped_product"}
    intended = {h.uid for h in _hooks(actions) if h.uid} | {
        a.delivery["body"]["checkout"]["metadata"]["uid"] for a in actions if isinstance(a, traffic.Legacy)
        and a.delivery}
    assert set(model.wallets()) <= intended and len(model.wallets()) > 10


def test_a_wrong_rule_would_show_in_the_wallets_of_a_short_run() -> None:
    """For each rule, some order's outcome hinges on it alone: a refund of each other status, a lost closing, a won
    closing without a refund, an order mixing a subscription line with one-time lines."""
    hooks = _hooks(_actions(150))
    events: dict[str, list[tuple[str, str]]] = defaultdict(list)
    mixed = False
    for hook in hooks:
        body = hook.delivery["body"]
        if hook.event_type == "ON_ORDER_COMPLETED":
            events[body["id"]].append(("order", ""))
            kinds = {line["subscription_id"] is None for line in body["lines"]}
            mixed |= kinds == {True, False}
        elif hook.event_type == "ON_REFUND":
            events[body["order_id"]].append(("refund", body["status"]))
        elif hook.event_type in ("ON_CHARGEBACK", "ON_CHARGEBACK_CLOSED"):
            events[body["order_id"]].append((hook.event_type, body["chargeback_status"]))
    alone = {}
    for seen in events.values():
        reversals = [e for e in seen if e[0].startswith("ON_CHARGEBACK") or e == ("refund", "completed")]
        if ("order", "") not in seen:
            continue
        refunds = {status for kind, status in seen if kind == "refund"}
        if not reversals:
            for status in refunds:
                alone[f"refund {status}"] = True
        if ("ON_CHARGEBACK_CLOSED", "lost") in seen and ("ON_CHARGEBACK_CLOSED", "won") not in seen:
            alone["lost"] = True
        if ("ON_CHARGEBACK_CLOSED", "won") in seen and "completed" not in refunds:
            alone["won"] = True
    assert set(alone) >= {f"refund {s}" for s in traffic.REFUND_STATUSES if s != "completed"} | {"lost", "won"}
    assert mixed


def test_legacy_v1_is_incompatible_and_v2_carries_the_order_of_its_delivery() -> None:
    actions = [a for a in _actions(600) if isinstance(a, traffic.Legacy)]
    assert {a.version for a in actions} == {1, 2}
    for a in actions:
        assert a.attributes["eventId"] == a.event_id and a.attributes["version"] == str(a.version)
        if a.version == 1:
            with pytest.raises(IncompatibleVersion):
                decode_envelope(a.data)
            assert a.verdict == "drop_incompatible" and a.delivery is None
            continue
        envelope = decode_envelope(a.data)
        assert a.delivery is not None and a.verdict is None
        deliveries.validate(a.delivery)
        body = a.delivery["body"]
        data = envelope["data"]
        assert envelope["version"] == 2 and envelope["eventId"] == a.delivery["event_id"] == a.event_id
        assert data["orderId"] == body["id"] and data["customer"]["id"] == body["customer"]["id"]
        assert data["customer"]["uid"] == body["checkout"]["metadata"]["uid"]
        assert a.ordering_key == ordering_key(envelope)  # the key the ingress gives the same customer's events
        assert [(x["productId"], x["quantity"]) for x in data["lines"]] == [
            (x["product_id"], x["quantity"]) for x in body["lines"]]
        assert data["subscription"] is None and data["refund"] is None and data["chargeback"] is None


def test_no_legacy_and_unknown_scenarios() -> None:
    assert not any(isinstance(a, traffic.Legacy) for a in _actions(500, legacy=False))
    with pytest.raises(ValueError, match="unknown scenarios"):
        traffic.Mix(weights={"bogus": 1})


def _hook() -> traffic.Webhook:
    mix = traffic.Mix(seed=1, run_id="r", weights={"order": 1}, legacy=False)
    action = mix.next()
    assert isinstance(action, traffic.Webhook)
    return action


def test_send_retries_a_503_like_paynow_and_records_every_attempt() -> None:
    answers = iter([httpx.Response(503, json={"error": "unavailable"}, headers={"retry-after": "0"}),
                    httpx.ConnectError("refused"),
                    httpx.Response(202, json={"status": "accepted", "region": "europe-west1"})])
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        ts = request.headers["paynow-timestamp"]
        assert request.headers["paynow-signature"] == signature("sec", int(ts), request.content)
        seen.append(request.content)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def go() -> dict[str, object]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await traffic.send_webhook(client, "http://lb/webhooks/paynow", "sec", hook,
                                              traffic.RetryPolicy(base_delay=0.001))
    hook = _hook()
    record = asyncio.run(go())
    assert [a["status"] for a in record["attempts"]] == [503, None, 202]  # type: ignore[index, union-attr]
    assert record["ok"] and record["region"] == "europe-west1" and record["status"] == 202
    assert seen == [hook.body] * 3  # re-sent unchanged


def test_a_4xx_is_final_and_retries_are_bounded() -> None:
    def bad(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_payload"})

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    async def go(handler: object) -> dict[str, object]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:  # type: ignore[arg-type]
            return await traffic.send_webhook(client, "http://x/webhooks/paynow", "s", _hook(),
                                              traffic.RetryPolicy(attempts=4, base_delay=0.001))
    record = asyncio.run(go(bad))
    assert not record["ok"] and len(record["attempts"]) == 1 and record["status"] == 400  # type: ignore[arg-type]
    record = asyncio.run(go(down))
    assert not record["ok"] and len(record["attempts"]) == 4  # type: ignore[arg-type]


def test_run_is_open_loop_at_the_rate_and_logs_every_webhook(tmp_path: Path) -> None:
    regions = iter(["us-central1", "europe-west1"] * 1000)

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)  # slow answers must not slow the sending (open loop)
        return httpx.Response(202, json={"status": "accepted", "region": next(regions)})

    log = tmp_path / "t.jsonl"
    mix = traffic.Mix(seed=3, run_id="open", legacy=False)
    stats = asyncio.run(traffic.run(target="http://lb", secret="s", rate=100, duration=1.0, log_path=log, mix=mix,
                                    transport=httpx.MockTransport(handler)))
    header, *records = traffic_log.read_log(log)
    assert header == mix.context()
    assert 95 <= stats.sent <= 101 and stats.accepted == stats.sent and stats.failed == 0
    assert len(records) == stats.sent and all(r["ok"] and r["kind"] == "webhook" for r in records)
    assert set(stats.by_region) == {"us-central1", "europe-west1"} and sum(stats.by_region.values()) == stats.sent
    assert json.loads(log.read_text().splitlines()[-1])["kind"] == "summary"


def test_rate_and_duration_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        asyncio.run(traffic.run(target="http://x", secret="s", rate=0, duration=1, log_path=tmp_path / "x",
                                mix=traffic.Mix()))


def test_a_saturated_sender_waits_instead_of_piling_up_requests(tmp_path: Path) -> None:
    peak = 0
    active = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal peak, active
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.2)
        active -= 1
        return httpx.Response(202, json={"status": "accepted", "region": "us-central1"})

    stats = asyncio.run(traffic.run(target="http://lb", secret="s", rate=200, duration=0.5,
                                    log_path=tmp_path / "t.jsonl", mix=traffic.Mix(seed=1, legacy=False),
                                    transport=httpx.MockTransport(handler), max_in_flight=5))
    assert peak == 5 and stats.failed == 0
    assert stats.sent < 0.5 * 200 * 0.5  # the shortfall shows in what was sent


def test_the_log_records_every_delivery_with_its_answer_and_the_run_context(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["event_type"] == "ON_REFUND":
            return httpx.Response(400, json={"error": "invalid_payload"})
        return httpx.Response(202, json={"status": "accepted", "region": "us-central1"})

    log = tmp_path / "ctx.jsonl"
    mapped = traffic.Mix.mapped_customers_for("ctx")
    mix = traffic.Mix(seed=5, run_id="ctx", mapped_customers=mapped, legacy=False)
    asyncio.run(traffic.run(target="http://lb", secret="s", rate=200, duration=0.5, log_path=log, mix=mix,
                            transport=httpx.MockTransport(handler)))
    traffic_log.append_log(log, {"kind": "mapping", "customerId": "cus_late", "uid": "user_late"})
    records = traffic_log.read_log(log)
    hooks = [r for r in records if r["kind"] == "webhook"]
    assert hooks and records[-1] == {"kind": "mapping", "customerId": "cus_late", "uid": "user_late"}
    sent = {h.event_id: h.delivery for h in mix.sent}
    compact = [r for r in traffic_log.read_log(log, compact=True) if r["kind"] == "webhook"]
    assert all(isinstance(r["delivery"], str) for r in compact)
    assert [traffic_log.delivery_of(r) for r in compact] == [r["delivery"] for r in hooks]
    for r in hooks:
        assert isinstance(r["delivery"], dict)
        delivery = traffic_log.delivery_of(r)
        assert delivery == personal.strip(copy.deepcopy(sent[r["eventId"]]))  # as sent, less personal data
        assert "billing_email" not in json.dumps(delivery)
        assert r["eventId"] == delivery["event_id"] and r["eventType"] == delivery["event_type"]
        assert r["ok"] == (delivery["event_type"] != "ON_REFUND")
    context = traffic_log.read_context([log])
    assert context.run_ids == {"ctx"} and context.catalog == mix.catalog()
    assert context.customers == {**mapped, "cus_late": "user_late"}
    assert json.loads(log.read_text().splitlines()[0])["kind"] == "run"


def test_the_traffic_uses_a_bounded_set_of_ordering_keys() -> None:
    """What killed `paynow drill load`: a key per order, event or unmapped customer grows the Pub/Sub emulator by a
    thread per key for ever. However long the traffic runs, its keys stay within the bounded set."""
    actions = _actions(4_000)
    keys = {a.ordering_key for a in actions if isinstance(a, traffic.Legacy)}
    keys |= {ordering_key(envelope_from_payload(deliveries.encode(h.delivery), timestamp_ms=0, region="r"))
             for h in _hooks(actions)}
    assert len(keys) <= ORDERING_KEYS
