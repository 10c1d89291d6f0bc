"""Pub/Sub brown-out under traffic through the LB: the stack's own Pub/Sub emulator is frozen (SIGSTOP) for 20 s; the
ingresses answer 503 with Retry-After and never 2xx for an unconfirmed publish, PayNow's re-sends all land, and the
audit and the independent ledger model agree afterwards (nothing lost, nothing credited twice)."""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from rich.console import Console

from ops.admin import audit, dlq
from ops.load import traffic, traffic_log
from ops.load.chaos import emulator_of, frozen
from ops.load.drills import Drills, Result
from ops.local.stack import Stack
from schemas import deliveries
from tests.ops.load.stacks import running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

RATE = 10.0  # webhooks/s
DURATION = 30.0  # s of traffic
FREEZE_AT = 4.0  # s into the traffic
FREEZE_S = 20.0
GRACE_S = 1.0  # a publish confirmed just before the SIGSTOP may still be answered in the freeze's first second
# PayNow re-sends for hours; the generator's default (6 attempts, ≤ 2 s apart) gives up inside a 20 s outage, so
# here it honours Retry-After (5 s) and keeps trying for about a minute.
POLICY = traffic.RetryPolicy(attempts=20, base_delay=0.2, max_delay=5.0)


@pytest.fixture(scope="module")
def stack(emulator_hosts: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A two-region stack with a Pub/Sub emulator of its own (the test freezes it; the session's must keep serving
    the other tests), on the session's Firestore emulator."""
    yield from running_stack("brownout", tmp_path_factory, own_pubsub=True)


@dataclass
class Answer:
    at: float  # wall clock, when the answer arrived
    status: int
    retry_after: str | None
    error: str | None  # the JSON body's error code; None for an answer that is not the ingress's JSON
    region: str | None  # the ingress's, from its URL (None through the LB)


@dataclass
class Watch(httpx.AsyncBaseTransport):
    """The generator's transport, noting every answer's status, Retry-After and error code (the log has no
    headers)."""

    inner: httpx.AsyncHTTPTransport = field(default_factory=lambda: httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=64)))
    answers: list[Answer] = field(default_factory=list)
    regions: dict[str, str] = field(default_factory=dict)  # region -> its ingress's base URL

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        error = None
        with contextlib.suppress(ValueError):
            body = response.json()
            error = body.get("error") if isinstance(body, dict) else None
        region = next((r for r, v in self.regions.items() if str(request.url).startswith(v)), None)
        self.answers.append(Answer(time.time(), response.status_code, response.headers.get("retry-after"), error,
                                   region))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _attempts(records: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for r in records:
        if r.get("kind") == "webhook":
            for a in r["attempts"]:
                yield r, a


def test_pubsub_brownout(stack: Stack) -> None:
    drills = Drills(stack, console=Console(width=160, stderr=True))
    emulator = emulator_of(drills, "pubsub")
    assert emulator is not None, "the stack did not start a Pub/Sub emulator of its own"
    watch = Watch()
    direct = Watch(regions={r: v["url"] for r, v in stack.info["ingress"].items()})
    marks: dict[str, float] = {}
    run = uuid.uuid4().hex[:8]

    async def probe(client: httpx.AsyncClient, region: str) -> None:
        """Once both regions are out of the LB's rotation its own 503s answer PayNow, so each ingress is also asked
        directly (an order PayNow sends; re-sent like the others until it lands; logged for the model)."""
        line = deliveries.order_line(f"line_probe_{run}_{region}", traffic.ONE_TIME[0])
        hook = traffic.Webhook("brownout_probe", deliveries.order_completed(
            f"evt_probe_{run}_{region}", f"ord_probe_{run}_{region}", f"cus_probe_{run}", [line],
            uid=f"user_probe_{run}"), f"cus_probe_{run}", f"user_probe_{run}")
        url = stack.info["ingress"][region]["url"] + traffic.WEBHOOK_PATH
        record = await traffic.send_webhook(client, url, stack.secret, hook, POLICY)
        assert drills.last_log is not None
        traffic_log.append_log(drills.last_log, record)

    async def brownout(started: float) -> None:
        await asyncio.sleep(max(0.0, started + FREEZE_AT - time.monotonic()))
        marks["frozen"] = time.time()
        async with httpx.AsyncClient(transport=direct) as client:
            async with frozen(emulator):
                await asyncio.sleep(GRACE_S)
                probes = [asyncio.create_task(probe(client, r)) for r in stack.config.regions]
                await asyncio.sleep(FREEZE_S - GRACE_S)
            marks["thawed"] = time.time()
            await asyncio.gather(*probes)

    result = Result("pubsub-brownout")
    began = time.monotonic()
    try:
        stats, records = drills.send("pubsub-brownout", rate=RATE, duration=DURATION, during=brownout,
                                     policy=POLICY, transport=watch)
        report = drills._common(result, stats, records)  # failed == 0, settled (nothing lost), audit + model
        recovered_all = time.time() - marks["thawed"]
        frozen_ms, thawed_ms = marks["frozen"] * 1000, marks["thawed"] * 1000

        # 1. what the ingresses answered while Pub/Sub could not confirm anything
        through_lb = [a for a in watch.answers if marks["frozen"] + GRACE_S <= a.at <= marks["thawed"]]
        asked = [a for a in direct.answers if marks["frozen"] <= a.at <= marks["thawed"]]
        for region in stack.config.regions:
            mine = [a for a in asked if a.region == region]
            good = [a for a in mine if a.status == 503 and a.error == "publish_unavailable" and a.retry_after == "5"]
            result.add(f"{region} asked directly during the freeze: 503 publish_unavailable, Retry-After 5",
                       f"{len(good)}/{len(mine)}", "all, > 0", len(good) == len(mine) > 0)
        all_503 = [a for a in watch.answers + direct.answers if a.status == 503]
        no_retry_after = [a for a in all_503 if not a.retry_after or not a.error]
        result.add("503s without Retry-After or JSON error (an ingress's or HAProxy's), whole run",
                   f"{len(no_retry_after)} of {len(all_503)}", "0", not no_retry_after)
        from_lb = sum(a.status == 503 and a.error == "unavailable" for a in through_lb)  # ops/local/haproxy.cfg
        from_ingress = sum(a.status == 503 and a.error != "unavailable" for a in through_lb)
        result.add("503s through the LB during the freeze: from an ingress / from HAProxy itself (no region ready)",
                   f"{from_ingress} / {from_lb}")

        # 2. no 2xx for a publish Pub/Sub could not have confirmed: a 202 (new publish) that started and ended inside
        # the freeze, or a 200 (recent duplicate) for an event no earlier answer had accepted
        accepted_before: dict[str, float] = {}
        for r, a in _attempts(records):
            if a["status"] is not None and 200 <= a["status"] < 300:
                done = a["at"] + a["ms"]
                accepted_before[r["eventId"]] = min(done, accepted_before.get(r["eventId"], done))
        unconfirmed = [
            (r["eventId"], a["status"]) for r, a in _attempts(records)
            if a["status"] in (200, 202) and a["at"] >= frozen_ms + GRACE_S * 1000
            and a["at"] + a["ms"] <= thawed_ms
            and (a["status"] == 202 or accepted_before[r["eventId"]] >= a["at"])]
        result.add("2xx answered for a publish during the freeze (unconfirmed)", len(unconfirmed), "0",
                   not unconfirmed)
        print("unconfirmed 2xx (first 5):", unconfirmed[:5])

        # 3. PayNow's re-sends land: every webhook refused during the freeze was accepted later
        refused = [r for r in records if r.get("kind") == "webhook"
                   and any(a["status"] != 200 and a["status"] != 202 for a in r["attempts"])]
        landed = sum(r["ok"] for r in refused)
        result.add("webhooks refused at least once, accepted on a re-send", f"{landed}/{len(refused)}", "all, > 0",
                   landed == len(refused) > 0)
        after = sorted(a["at"] + a["ms"] for _, a in _attempts(records)
                       if a["status"] in (200, 202) and a["at"] >= thawed_ms)
        first_2xx = (after[0] - thawed_ms) / 1000 if after else None
        result.add("time from the thaw to the first 2xx", "-" if first_2xx is None else f"{first_2xx:.1f} s")
        result.add("time from the thaw to every accepted event accounted", f"≤ {recovered_all:.1f} s (incl. the "
                   "audit's reads)")

        # 4. figures
        accepted = audit.accepted_events(records)
        refs = [drills.db.collection("webhookEvents").document(e) for e in sorted(accepted)]
        committed = sum(s.exists for s in drills.db.get_all(refs)) if refs else 0
        letters = set(dlq.unresolved(drills.db)) & accepted.keys()
        result.add("accepted events", len(accepted))
        result.add("committed (webhookEvents)", committed)
        result.add("dead-lettered (permanent verdicts the model expects)", len(letters))
        result.add("503s seen by PayNow (whole run)", sum(a.status == 503 for a in watch.answers))
        result.add("timeouts / connection errors seen by PayNow",
                   sum(a["status"] is None for _, a in _attempts(records)))
        assert report.get(audit.LOST).value == "0"
    finally:
        drills.close()
        result.seconds = time.monotonic() - began
        Console(width=160).print(result.table())
    assert result.passed, "see the table above"
    wallets = result.figure(f"audit: {audit.MODEL_WALLETS}").value
    assert wallets.split("/")[0] == wallets.split("/")[1] != "0"

