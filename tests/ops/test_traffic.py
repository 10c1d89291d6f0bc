"""The traffic mix (what PayNow sends), the PayNow-like retry loop, open-loop pacing and the JSONL record."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ops import traffic
from ops.signing import signature
from schemas import IncompatibleVersion, decode_envelope, envelope_from_payload


def _actions(n: int = 3000, **kwargs: object) -> list[traffic.Action]:
    mix = traffic.Mix(seed=7, run_id="t1", mapped_customers=traffic.Mix.mapped_customers_for("t1"), **kwargs)
    return [mix.next() for _ in range(n)]


def test_every_scenario_appears_and_every_webhook_maps_to_an_envelope() -> None:
    actions = _actions()
    scenarios = Counter(a.scenario for a in actions)
    assert set(traffic.WEIGHTS) | {"purchase_after_refund"} == set(scenarios)
    for action in actions:
        if isinstance(action, traffic.Webhook):
            envelope = envelope_from_payload(action.body, timestamp_ms=1, region="us-central1")
            assert envelope["eventId"] == action.event_id and envelope["eventType"] == action.event_type


def test_the_mix_is_reproducible_from_its_seed() -> None:
    first = [(a.scenario, a.event_id) for a in _actions(300)]
    assert first == [(a.scenario, a.event_id) for a in _actions(300)]


def test_duplicates_repeat_an_earlier_delivery_byte_for_byte_and_redeliveries_change_only_the_id() -> None:
    actions = _actions()
    by_id = {}
    for a in actions:
        if isinstance(a, traffic.Webhook) and a.scenario == "duplicate":
            assert by_id[a.event_id].body == a.body
        if isinstance(a, traffic.Webhook) and a.scenario == "redelivery":
            payload = json.loads(a.body)
            assert payload["id"] not in by_id
            assert any(json.loads(o.body)["data"] == payload["data"] for o in by_id.values())
        if isinstance(a, traffic.Webhook):
            by_id.setdefault(a.event_id, a)


def test_early_refunds_are_sent_before_their_purchase_and_net_to_zero() -> None:
    actions = _actions()
    position = {}
    for i, a in enumerate(actions):
        if isinstance(a, traffic.Webhook) and a.event_type in ("ON_ORDER_COMPLETED", "ON_REFUND"):
            order = json.loads(a.body)["data"]["order"]["id"]
            position.setdefault((order, a.event_type), (i, a))
    early = [a for a in actions[:-20] if a.scenario == "refund_early"]  # the last ones' purchases are still held
    assert early
    for refund in early:
        order = json.loads(refund.body)["data"]["order"]["id"]
        index, purchase = position[(order, "ON_ORDER_COMPLETED")]
        assert index > position[(order, "ON_REFUND")][0]
        (uid, reversal), = refund.expected.items()
        assert sum(reversal.values()) == -sum(purchase.expected[uid].values()) < 0


def test_expected_entries_follow_the_ledger_rules() -> None:
    for a in _actions():
        if not isinstance(a, traffic.Webhook):
            continue
        payload = json.loads(a.body)
        if a.uid is None:  # an unmapped customer's order (or a duplicate of one)
            assert a.uid is None and a.expected == {} and a.dlq == "unmapped_customer"
            assert not payload["data"]["order"]["customer"]["metadata"]
        elif a.event_type == "ON_ORDER_COMPLETED":
            lines = payload["data"]["order"]["lines"]
            assert sorted(a.expected[a.uid]) == sorted(f"purchase:{payload['data']['order']['id']}:{i}"
                                                       for i in range(len(lines)))
        elif a.event_type in ("ON_REFUND", "ON_CHARGEBACK"):
            assert all(k.startswith("reversal:") and v < 0 for k, v in a.expected[a.uid].items())
        elif a.event_type.startswith("ON_SUBSCRIPTION"):
            sub = payload["data"]["subscription"]
            assert list(a.expected[a.uid]) == [f"subscription:{sub['id']}:{sub['current_period_start'][:10]}"]


def test_mapped_customers_send_no_uid_but_expect_their_mapped_user() -> None:
    mapped = traffic.Mix.mapped_customers_for("t1")
    hooks = [a for a in _actions() if a.scenario == "mapped_order"]
    assert hooks
    for a in hooks:
        customer = json.loads(a.body)["data"]["order"]["customer"]
        assert customer["metadata"] == {} and list(a.expected) == [mapped[customer["id"]]]


def test_legacy_v1_is_incompatible_and_v2_decodes_to_its_expected_purchase() -> None:
    actions = [a for a in _actions() if isinstance(a, traffic.Legacy)]
    assert {a.version for a in actions} == {1, 2}
    for a in actions:
        assert a.attributes["eventId"] == a.event_id and a.attributes["version"] == str(a.version)
        if a.version == 1:
            with pytest.raises(IncompatibleVersion):
                decode_envelope(a.data)
            assert a.dlq == "drop_incompatible"
        else:
            envelope = decode_envelope(a.data)
            uid = envelope["data"]["customer"]["uid"]
            assert a.ordering_key == f"uid:{uid}"
            assert list(a.expected[uid]) == [f"purchase:{envelope['data']['orderId']}:0"]


def test_no_legacy_and_unknown_scenarios() -> None:
    assert not any(isinstance(a, traffic.Legacy) for a in _actions(500, legacy=False))
    with pytest.raises(ValueError, match="unknown scenarios"):
        traffic.Mix(weights={"bogus": 1})


def _hook() -> traffic.Webhook:
    mix = traffic.Mix(seed=1, run_id="r", weights={"order": 1})
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
    records = traffic.read_log(log)
    assert 95 <= stats.sent <= 101 and stats.accepted == stats.sent and stats.failed == 0
    assert len(records) == stats.sent and all(r["ok"] and r["kind"] == "webhook" for r in records)
    assert set(stats.by_region) == {"us-central1", "europe-west1"} and sum(stats.by_region.values()) == stats.sent
    assert json.loads(log.read_text().splitlines()[-1])["kind"] == "summary"


def test_read_log_names_a_bad_line(tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_text('{"kind":"webhook","ok":true,"eventId":"e"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        traffic.read_log(log)


def test_rate_and_duration_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        asyncio.run(traffic.run(target="http://x", secret="s", rate=0, duration=1, log_path=tmp_path / "x",
                                mix=traffic.Mix()))


def test_read_log_skips_the_line_a_running_generator_is_still_writing(tmp_path: Path) -> None:
    log = tmp_path / "live.jsonl"
    log.write_text('{"kind":"webhook","ok":true,"eventId":"e1"}\n{"kind":"webhook","ok":tr')
    assert [r["eventId"] for r in traffic.read_log(log)] == ["e1"]


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
