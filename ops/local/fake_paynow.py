"""A fake of PayNow's Management API (webhook subscriptions, delivery history, resend, orders) for tests and the stack.

Its responses are built from PayNow's own spec (schemas/vendor/paynow/management-api.json: each DTO starts from the
schema's required fields and `example` values, then the fields a delivery determines), and the tests validate every
response against that spec. It is fed with deliveries directly (`add_delivery`, tests) or from the traffic
generator's JSONL records (`from_traffic_record`; `TrafficFeed` tails `.paynow/traffic/*.jsonl` for `paynow up`): a
webhook the generator got a 2xx for is `success`, one whose retries ended without one is `failed` (PayNow gave up).
Each webhook subscription subscribes to one event type, as in PayNow. Faults (429 with Retry-After, 5xx) are injected
per request with `inject`.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import itertools
import json
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas import openapi_example

SPEC_PATH = "vendor/paynow/management-api.json"
DEFAULT_STORE = "411486491630370816"
DEFAULT_API_KEY = "pnapi_v1_local_fake"
PAGE_SIZE = 25
FIRST_ID = 470_000_000_000_000_000


@cache
def spec() -> dict[str, Any]:
    """PayNow's Management API (OpenAPI 3.1), as vendored in the schemas package."""
    document: dict[str, Any] = json.loads(resources.files("schemas").joinpath(SPEC_PATH).read_text())
    return document


def example(schema: Mapping[str, Any]) -> Any:
    """An instance of a schema of the Management API, from its examples (see schemas.openapi_example)."""
    return openapi_example.example(spec(), schema, max_depth=8)


def dto(schema_name: str, /, **overrides: Any) -> dict[str, Any]:
    """components.schemas.<schema_name> from its examples, with `overrides` (None drops an optional field)."""
    value: dict[str, Any] = example({"$ref": f"#/components/schemas/{schema_name}"})
    for key, v in overrides.items():
        if v is None:
            value.pop(key, None)
        else:
            value[key] = v
    return value


def event_enum() -> list[str]:
    return list(spec()["components"]["schemas"]["WebhookEventType"]["enum"])


def management_event(event_type: str) -> str | None:
    """The Management API's name of a delivery's type (`ON_ORDER_COMPLETED` -> `OnOrderCompleted`), if it has one."""
    name = "".join(part.capitalize() for part in event_type.split("_"))
    return name if name in event_enum() else None


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


@dataclass
class Fault:
    status: int
    retry_after: str | None = None


@dataclass
class FakePayNow:
    """The state behind the fake: one store, its subscriptions, queued webhooks (history) and orders."""

    store_id: str = DEFAULT_STORE
    api_key: str = DEFAULT_API_KEY
    url: str = "http://127.0.0.1/webhooks/paynow"
    secret: str = "whsec_local"
    page_size: int = PAGE_SIZE
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # event enum name -> subscription
    queued: list[dict[str, Any]] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)  # SubscriptionDto by id
    faults: deque[Fault] = field(default_factory=deque)
    resends: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(FIRST_ID))
    _seq: Any = field(default_factory=itertools.count)

    def new_id(self) -> str:
        return str(next(self._ids))

    def inject(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        """The next `count` API requests answer `status` (e.g. 429 with `retry_after`, or 503)."""
        self.faults.extend(Fault(status, retry_after) for _ in range(count))

    def subscription(self, event: str) -> dict[str, Any]:
        if event not in self.webhooks:
            self.webhooks[event] = dto("WebhookSubscriptionDto", id=self.new_id(), url=self.url,
                                       secret=self.secret, subscribed_to=event, type="json_v1",
                                       discord_format=None)
        return self.webhooks[event]

    # -- feeding -------------------------------------------------------------------------------------------
    def add_delivery(self, delivery: Mapping[str, Any], *, state: str = "success", created_ms: int | None = None,
                     attempts: list[tuple[int, int | None]] | None = None, next_retry_ms: int | None = None,
                     ) -> dict[str, Any] | None:
        """Queue one delivery as PayNow's history would show it; `attempts` = [(at_ms, status or None)].

        A delivery of a type the Management API has no name for (a future type) is not queued: no subscription can
        exist for it. An ON_ORDER_COMPLETED also makes its order (completed); a completed refund / a chargeback
        marks the order refunded / chargeback.
        """
        event = management_event(str(delivery.get("event_type")))
        if event is None:
            return None
        created_ms = created_ms if created_ms is not None else _now_ms()
        hook = self.subscription(event)
        executions = [dto("ExecutedWebhookDto", id=self.new_id(), started_at=iso(at), finished_at=iso(at + 5),
                          status_code=status or 0,
                          response=None if status else "no answer (connection failed or timed out)")
                      for at, status in (attempts or [])]
        item = dto("QueuedWebhookDto", id=self.new_id(), webhook_id=hook["id"], created_at=iso(created_ms),
                   state=state, next_retry=iso(next_retry_ms) if next_retry_ms else None, event=event,
                   payload=copy.deepcopy(dict(delivery)), executions=executions)
        item.setdefault("next_retry", None)
        item["_seq"] = next(self._seq)
        self.queued.append(item)
        self._order_effects(delivery, created_ms)
        return item

    def _order_effects(self, delivery: Mapping[str, Any], created_ms: int) -> None:
        body = delivery.get("body") or {}
        kind = delivery.get("event_type")
        if kind == "ON_ORDER_COMPLETED" and isinstance(body.get("id"), str) and body["id"] not in self.orders:
            self.add_order(order_from_body(body, self.store_id, created_ms))
        elif (kind == "ON_CHARGEBACK" or (kind == "ON_REFUND" and body.get("status") == "completed")) \
                and body.get("order_id") in self.orders:
            self.orders[body["order_id"]]["status"] = "refunded" if kind == "ON_REFUND" else "chargeback"
        elif kind in ("ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED") and isinstance(body.get("id"), str):
            cycle = body.get("billing_cycle_sequence")
            known = self.store_subscriptions.get(body["id"])
            if known is None or (isinstance(cycle, int) and cycle > known["billing_cycle_sequence"]):
                self.store_subscriptions[body["id"]] = subscription_from_body(body, self.store_id, created_ms)

    def add_order(self, order: dict[str, Any]) -> None:
        """An order PayNow holds (e.g. one for which no webhook was ever queued)."""
        order["_seq"] = next(self._seq)
        self.orders[str(order["id"])] = order

    def add_traffic_record(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        args = from_traffic_record(record)
        return self.add_delivery(**args) if args is not None else None


def order_from_body(body: Mapping[str, Any], store_id: str, created_ms: int, status: str = "completed",
                    ) -> dict[str, Any]:
    """The OrderDto PayNow would list for an ON_ORDER_COMPLETED body (its OrderDTO-like shape, re-typed)."""
    customer = body.get("customer") or {}
    customer_id = str(customer.get("id") or "0")
    lines = []
    for line in body.get("lines") or []:
        quantity = int(line.get("quantity") or 1)
        price = int(line.get("price") or 0)
        total = int(line.get("total_amount") or price * quantity)
        lines.append(dto("OrderLineDto", id=str(line.get("id") or "0"), product_id=str(line.get("product_id")),
                         product_version_id=str(line.get("product_version_id") or line.get("product_id")),
                         quantity=quantity, price=price, subtotal_amount=total, total_amount=total,
                         tax_amount=0, discount_amount=0, subscription_id=line.get("subscription_id")))
    total = int(body.get("total_amount") or sum(x["total_amount"] for x in lines))
    is_sub = any("subscription_id" in x for x in lines)
    return dto("OrderDto", id=str(body["id"]), store_id=store_id, customer_id=customer_id,
               customer=dto("CustomerDto", id=customer_id, store_id=store_id, created_at=iso(created_ms),
                            metadata={}, name=customer.get("name")),
               type="mixed" if is_sub else "one_time", status=status, is_subscription=is_sub,
               currency=str(body.get("currency") or "usd").lower(), lines=lines, subtotal_amount=total,
               total_amount=total, tax_amount=0, discount_amount=0, billing_cycle_sequence=0,
               created_at=iso(created_ms), completed_at=iso(created_ms), tax_jurisdictions=[], applied_coupons=[],
               applied_giftcards=[])


def subscription_from_body(body: Mapping[str, Any], store_id: str, created_ms: int) -> dict[str, Any]:
    """The SubscriptionDto PayNow would show for a subscription delivery's body (at its billing cycle)."""
    customer = body.get("customer") or {}
    customer_id = str(customer.get("id") or "0")
    cycle = body.get("billing_cycle_sequence")
    return dto("SubscriptionDto", id=str(body["id"]), store_id=store_id, product_id=str(body.get("product_id")),
               customer=dto("CustomerDto", id=customer_id, store_id=store_id, created_at=iso(created_ms),
                            metadata={}, name=customer.get("name")),
               status="active", billing_cycle_sequence=cycle if isinstance(cycle, int) else 0,
               created_at=iso(created_ms))


def from_traffic_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """`add_delivery` arguments for one traffic-generator record (ops/load/traffic.py `send_webhook`), or None.

    Only webhooks carry a delivery; legacy publishes never went through PayNow. 2xx -> success; anything else is
    what the generator (playing PayNow) ended with after its retries: failed. A connection error has no status:
    its execution records status_code 0.
    """
    delivery = record.get("delivery")
    if record.get("kind") != "webhook" or not isinstance(delivery, dict):
        return None
    attempts = [(int(a.get("at") or 0), a.get("status")) for a in record.get("attempts") or []]
    created = int(record.get("sentAt") or (attempts[0][0] if attempts else _now_ms()))
    return {"delivery": delivery, "state": "success" if record.get("ok") else "failed", "created_ms": created,
            "attempts": attempts}


class TrafficFeed:
    """Tails the traffic generator's JSONL logs in a directory (new complete lines only) into a FakePayNow."""

    def __init__(self, fake: FakePayNow, directory: Path) -> None:
        self.fake = fake
        self.directory = directory
        self.offsets: dict[Path, int] = {}

    def poll(self) -> int:
        added = 0
        for path in sorted(self.directory.glob("*.jsonl")):
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            complete = data[:data.rfind(b"\n") + 1]
            self.offsets[path] = offset + len(complete)
            for line in complete.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and self.fake.add_traffic_record(record) is not None:
                    added += 1
        return added


# -- the HTTP API --------------------------------------------------------------------------------------------------
def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """PayNow's error body (PayNowError)."""
    return JSONResponse({"status": status, "code": code, "message": message, "trace_id": None}, status_code=status,
                        headers=headers)


def _public(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


_INT = re.compile(r"^-?\d{1,9}$")


def create_app(fake: FakePayNow, feed: TrafficFeed | None = None) -> Starlette:
    def guard(request: Request) -> Response | None:
        fake.requests.append((request.method, request.url.path))
        if feed is not None:
            feed.poll()
        if fake.faults:
            fault = fake.faults.popleft()
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            code = "too-many-requests" if fault.status == 429 else "internal-server-error"
            return error(fault.status, code, "injected fault", headers)
        if request.headers.get("authorization") != f"APIKey {fake.api_key}":
            return error(401, "unauthorized", "missing or invalid API key")
        if request.path_params.get("storeId") != fake.store_id:
            return error(404, "not-found", "store not found")
        return None

    async def webhooks(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        return JSONResponse(list(fake.webhooks.values()))

    async def history(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        webhook_id = request.path_params["webhookId"]
        if webhook_id not in {w["id"] for w in fake.webhooks.values()}:
            return error(404, "not-found", "webhook subscription not found")
        state = request.query_params.get("state", "all")
        page_text = request.query_params.get("page", "1")
        if state not in ("success", "pending", "failed", "all") or not _INT.match(page_text) or int(page_text) < 1:
            return error(400, "bad-request", "state must be success|pending|failed|all and page a positive integer")
        page = int(page_text)
        items = [q for q in fake.queued if q["webhook_id"] == webhook_id and state in ("all", q["state"])]
        items.sort(key=lambda q: (q["created_at"], q["_seq"]), reverse=True)
        chunk = items[(page - 1) * fake.page_size: page * fake.page_size]
        return JSONResponse({"page": page, "history": [_public(q) for q in chunk]})

    async def resend(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return error(400, "bad-request", "body must be JSON")
        target = body.get("webhook_id") if isinstance(body, dict) else None
        if not isinstance(target, str) or target not in {q["id"] for q in fake.queued}:
            return error(404, "not-found", "queued webhook not found")
        fake.resends.append(target)
        return Response(status_code=204)

    async def orders(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        q = request.query_params
        limit_text = q.get("limit", "25")
        if not _INT.match(limit_text) or not 1 <= int(limit_text) <= 100:
            return error(400, "bad-request", "limit must be between 1 and 100")
        statuses = set(q.getlist("status"))
        ordered = sorted(fake.orders.values(), key=lambda o: (o["created_at"], o["_seq"]))
        position = {o["id"]: i for i, o in enumerate(ordered)}
        for cursor in ("before", "after"):
            if q.get(cursor) is not None and q[cursor] not in position:
                return error(400, "bad-request", f"{cursor}: unknown order id")
        chosen = [o for i, o in enumerate(ordered)
                  if (not statuses or o["status"] in statuses)
                  and ("before" not in q or i < position[q["before"]])
                  and ("after" not in q or i > position[q["after"]])]
        ascending = q.get("asc", "false").lower() == "true"
        chosen = chosen[:int(limit_text)] if ascending else list(reversed(chosen))[:int(limit_text)]
        return JSONResponse([_public(o) for o in chosen])

    async def order(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        found = fake.orders.get(request.path_params["orderId"])
        return JSONResponse(_public(found)) if found else error(404, "not-found", "order not found")

    async def subscription(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        found = fake.store_subscriptions.get(request.path_params["subscriptionId"])
        return JSONResponse(_public(found)) if found else error(404, "not-found", "subscription not found")

    async def fake_orders(request: Request) -> Response:
        """Not PayNow's: add an order no webhook was ever queued for (drills); same API key."""
        if request.headers.get("authorization") != f"APIKey {fake.api_key}":
            return error(401, "unauthorized", "missing or invalid API key")
        body = await request.json()
        fake.add_order(order_from_body(body, fake.store_id, int(body.get("created_ms") or _now_ms())))
        return Response(status_code=204)

    store = "/v1/stores/{storeId}"
    return Starlette(routes=[
        Route(f"{store}/webhooks", webhooks, methods=["GET"]),
        Route(f"{store}/webhooks/resend", resend, methods=["POST"]),
        Route(f"{store}/webhooks/{{webhookId}}/history", history, methods=["GET"]),
        Route(f"{store}/orders", orders, methods=["GET"]),
        Route(f"{store}/orders/{{orderId}}", order, methods=["GET"]),
        Route(f"{store}/subscriptions/{{subscriptionId}}", subscription, methods=["GET"]),
        Route("/_fake/orders", fake_orders, methods=["POST"]),
    ])


def start_in_stack(stack: Any, timeout: float = 30.0) -> dict[str, str]:
    """Start the fake as a process of a local stack (`paynow up`), fed from its traffic logs; its endpoints."""
    import secrets
    import sys
    import time

    import httpx

    from ops.local.emulators import LOOPBACK, free_port
    from ops.local.stack import Process, StackError

    port = free_port()
    api_key = "pnapi_local_" + secrets.token_urlsafe(18)
    stack.traffic_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ops.local.fake_paynow", "--port", str(port), "--traffic-dir",
            str(stack.traffic_dir), "--webhook-url", stack.target + "/webhooks/paynow"]
    process = Process("paynow-api", argv, {"PAYNOW_API_KEY": api_key}, str(stack.logs / "paynow-api.log"))
    stack.processes["paynow-api"] = process
    process.start()
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/stores/{DEFAULT_STORE}/webhooks", timeout=1,
                         headers={"Authorization": f"APIKey {api_key}"}).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not process.alive() or time.monotonic() > deadline:
            raise StackError(f"fake PayNow API did not start; log {process.log}:\n{process.tail()}")
        time.sleep(0.2)
    stack.info["paynowApi"] = info = {"url": url, "apiKey": api_key, "storeId": DEFAULT_STORE}
    return info


def main(argv: list[str] | None = None) -> None:
    import os

    import uvicorn

    parser = argparse.ArgumentParser(prog="fake_paynow", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--traffic-dir", type=Path, required=True, help="the traffic generator's JSONL logs")
    parser.add_argument("--store", default=DEFAULT_STORE)
    parser.add_argument("--webhook-url", default="http://127.0.0.1/webhooks/paynow")
    args = parser.parse_args(argv)
    fake = FakePayNow(store_id=args.store, api_key=os.environ.get("PAYNOW_API_KEY", DEFAULT_API_KEY),
                      url=args.webhook_url)
    for event in ("OnOrderCompleted", "OnRefund", "OnChargeback", "OnChargebackClosed", "OnSubscriptionActivated",
                  "OnSubscriptionRenewed"):
        fake.subscription(event)
    app = create_app(fake, TrafficFeed(fake, args.traffic_dir))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
