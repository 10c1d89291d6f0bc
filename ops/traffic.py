"""A PayNow stand-in: a realistic, seeded mix of signed webhooks sent open-loop at a rate, with a JSONL record."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops.catalog import KNOWN_PRODUCTS
from ops.signing import signed_headers
from ops.status import percentile
from schemas import encode_legacy

ONE_TIME = sorted(p for p, v in KNOWN_PRODUCTS.items() if v["kind"] == "one_time")
SUBSCRIPTIONS = sorted(p for p, v in KNOWN_PRODUCTS.items() if v["kind"] == "subscription")
WEBHOOK_PATH = "/webhooks/paynow"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})

# Scenario weights of the mix (relative). Duplicates and re-deliveries repeat earlier events; the early refunds
# send a refund and schedule its purchase a few events later (PayNow delivers out of order).
WEIGHTS: dict[str, int] = {
    "order": 30, "multi_order": 12, "mapped_order": 8, "sub_activate": 8, "sub_renew": 8, "refund": 4,
    "chargeback": 2, "refund_early": 2, "duplicate": 8, "redelivery": 3, "unmapped": 3, "legacy_v1": 2,
    "legacy_v2": 3,
}


@dataclass
class Webhook:
    """One webhook to POST; `expected` = {uid: {entryId: amount}} once it is accepted, `dlq` its DLQ verdict."""

    scenario: str
    event_id: str
    event_type: str
    body: bytes
    customer_id: str
    uid: str | None
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    dlq: str | None = None


@dataclass
class Legacy:
    """A v1/v2 envelope published straight onto the topic, as an old producer would."""

    scenario: str
    event_id: str
    event_type: str
    version: int
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    dlq: str | None = None


Action = Webhook | Legacy


@dataclass
class _Order:
    order_id: str
    customer: dict[str, Any]
    uid: str | None
    lines: list[dict[str, Any]]
    reversed: bool = False


class Mix:
    """A deterministic stream of webhooks for one run: `next()` gives the next action (seeded, so reproducible).

    Users and customers are scoped to the run (`run_id`), so the ledger a run should produce is exactly the union of
    `expected` of its accepted actions. `mapped_customers` ({customerId: uid}) are customers without a uid in their
    payloads whose mapping exists in `paynowCustomers`; without any, the mapped scenario sends the uid instead.
    """

    def __init__(self, *, seed: int = 0, run_id: str | None = None, users: int = 25,
                 mapped_customers: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, legacy: bool = True) -> None:
        self.rng = random.Random(seed)
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.users = [(f"cus_{self.run_id}_{i}", f"user_{self.run_id}_{i}") for i in range(users)]
        self.mapped = dict(mapped_customers or {})
        weights = dict(weights or WEIGHTS)
        if not legacy:
            weights.pop("legacy_v1", None)
            weights.pop("legacy_v2", None)
        unknown = set(weights) - set(WEIGHTS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {sorted(WEIGHTS)}")
        self.scenarios = [s for s, w in weights.items() if w > 0]
        self.weights = [weights[s] for s in self.scenarios]
        self.count = 0
        self.webhooks = 0
        self.orders: list[_Order] = []
        self.subscriptions: list[dict[str, Any]] = []
        self.sent: list[Webhook] = []
        self.pending: list[tuple[int, Webhook]] = []  # (due index, purchase held back after its early refund)

    @staticmethod
    def mapped_customers_for(run_id: str, n: int = 3) -> dict[str, str]:
        """The customer -> uid mappings a run with this id uses (seed them before sending)."""
        return {f"cus_{run_id}_mapped_{i}": f"user_{run_id}_mapped_{i}" for i in range(n)}

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.run_id}_{self.count}"

    def _user(self) -> tuple[dict[str, Any], str]:
        customer_id, uid = self.rng.choice(self.users)
        return {"id": customer_id, "email": f"{customer_id}@example.com", "metadata": {"uid": uid}}, uid

    def _webhook(self, scenario: str, event_type: str, data: dict[str, Any], customer: dict[str, Any],
                 uid: str | None, expected: dict[str, dict[str, int]], dlq: str | None = None) -> Webhook:
        event_id = self._id("evt")
        body = json.dumps({"id": event_id, "event_type": event_type, "data": data}, separators=(",", ":")).encode()
        return Webhook(scenario, event_id, event_type, body, str(customer["id"]), uid, expected, dlq)

    def _order(self, customer: dict[str, Any], uid: str | None, n_lines: int) -> _Order:
        lines = [{"product_id": self.rng.choice(ONE_TIME), "quantity": self.rng.choice((1, 1, 1, 2, 3)),
                  "price": f"{self.rng.randint(1, 99)}.99"} for _ in range(n_lines)]
        return _Order(self._id("ord"), customer, uid, lines)

    @staticmethod
    def _order_data(order: _Order) -> dict[str, Any]:
        return {"order": {"id": order.order_id, "pretty_id": order.order_id.upper(), "customer": order.customer,
                          "lines": order.lines}}

    @staticmethod
    def _entries(order: _Order, prefix: str, sign: int) -> dict[str, dict[str, int]]:
        if order.uid is None:
            return {}
        return {order.uid: {f"{prefix}:{order.order_id}:{i}":
                            sign * KNOWN_PRODUCTS[line["product_id"]]["points"] * line["quantity"]
                            for i, line in enumerate(order.lines)}}

    def _purchase(self, order: _Order, scenario: str) -> Webhook:
        dlq = "unmapped_customer" if order.uid is None else None
        return self._webhook(scenario, "ON_ORDER_COMPLETED", self._order_data(order), order.customer, order.uid,
                             self._entries(order, "purchase", 1), dlq)

    def _reversal(self, order: _Order, event_type: str, scenario: str) -> Webhook:
        order.reversed = True
        return self._webhook(scenario, event_type, self._order_data(order), order.customer, order.uid,
                             self._entries(order, "reversal", -1))

    def _subscription(self, sub: dict[str, Any], event_type: str, scenario: str) -> Webhook:
        period = f"{2026 + sub['period'] // 12}-{sub['period'] % 12 + 1:02d}-01T00:00:00Z"
        data = {"subscription": {"id": sub["id"], "product_id": sub["product_id"], "customer": sub["customer"],
                                 "status": "ACTIVE", "current_period_start": period}}
        entries = {sub["uid"]: {f"subscription:{sub['id']}:{period[:10]}":
                                KNOWN_PRODUCTS[sub["product_id"]]["points"]}}
        return self._webhook(scenario, event_type, data, sub["customer"], sub["uid"], entries)

    def _legacy(self, version: int) -> Legacy:
        customer, uid = self._user()
        order = self._order(customer, uid, 1)
        event_id = self._id("evt")
        if version == 1:
            record = {"version": 1, "eventId": event_id, "eventType": "ON_ORDER_COMPLETED",
                      "payloadJson": json.dumps(self._order_data(order))}
            expected: dict[str, dict[str, int]] = {}
            dlq: str | None = "drop_incompatible"
        else:
            record = {"version": 2, "eventId": event_id, "eventType": "ON_ORDER_COMPLETED",
                      "timestamp": int(time.time() * 1000),
                      "data": {"orderId": order.order_id, "prettyId": order.order_id.upper(),
                               "customer": {"id": customer["id"], "email": customer["email"], "uid": uid},
                               "lines": [{"productId": line["product_id"], "quantity": line["quantity"],
                                          "price": line["price"]} for line in order.lines],
                               "subscription": None}}
            expected, dlq = self._entries(order, "purchase", 1), None
        attributes = {"version": str(version), "eventId": event_id, "eventType": "ON_ORDER_COMPLETED"}
        return Legacy(f"legacy_v{version}", event_id, "ON_ORDER_COMPLETED", version,
                      encode_legacy(version, record), attributes, f"uid:{uid}", expected, dlq)

    def next(self) -> Action:
        """The next action of the mix."""
        if self.pending and self.pending[0][0] <= self.webhooks:
            return self._record(self.pending.pop(0)[1])
        scenario = self.rng.choices(self.scenarios, self.weights)[0]
        action = self._make(scenario)
        return self._record(action) if isinstance(action, Webhook) else action

    def _remember(self, order: _Order) -> None:
        self.orders.append(order)
        if len(self.orders) > 2000:  # refunds and chargebacks pick from the recent past; bound long runs
            del self.orders[:500]

    def _record(self, hook: Webhook) -> Webhook:
        self.webhooks += 1
        self.sent.append(hook)
        if len(self.sent) > 5000:  # bound memory on long runs; duplicates come from the recent past
            del self.sent[:1000]
        return hook

    def _make(self, scenario: str) -> Action:
        rng = self.rng
        if scenario in ("order", "multi_order"):
            customer, uid = self._user()
            order = self._order(customer, uid, 1 if scenario == "order" else rng.randint(2, 4))
            self._remember(order)
            return self._purchase(order, scenario)
        if scenario == "mapped_order":
            if not self.mapped:
                return self._make("order")
            customer_id, uid = rng.choice(sorted(self.mapped.items()))
            order = self._order({"id": customer_id, "email": f"{customer_id}@example.com", "metadata": {}}, uid,
                                rng.randint(1, 2))
            self._remember(order)
            return self._purchase(order, scenario)
        if scenario == "unmapped":
            customer_id = self._id("cus_unmapped")
            order = self._order({"id": customer_id, "email": f"{customer_id}@example.com", "metadata": {}}, None, 1)
            return self._purchase(order, scenario)
        if scenario == "sub_activate" or (scenario == "sub_renew" and not self.subscriptions):
            customer, uid = self._user()
            sub = {"id": self._id("sub"), "product_id": rng.choice(SUBSCRIPTIONS), "customer": customer,
                   "uid": uid, "period": rng.randint(0, 5)}
            self.subscriptions.append(sub)
            if len(self.subscriptions) > 2000:
                del self.subscriptions[:500]
            return self._subscription(sub, "ON_SUBSCRIPTION_ACTIVATED", "sub_activate")
        if scenario == "sub_renew":
            sub = rng.choice(self.subscriptions)
            sub["period"] += 1
            return self._subscription(sub, "ON_SUBSCRIPTION_RENEWED", scenario)
        if scenario in ("refund", "chargeback"):
            candidates = [o for o in self.orders[-500:] if not o.reversed and o.uid is not None]
            if not candidates:
                return self._make("order")
            event_type = "ON_REFUND" if scenario == "refund" else "ON_CHARGEBACK"
            return self._reversal(rng.choice(candidates), event_type, scenario)
        if scenario == "refund_early":
            customer, uid = self._user()
            order = self._order(customer, uid, rng.randint(1, 2))
            refund = self._reversal(order, "ON_REFUND", scenario)
            self.pending.append((self.webhooks + rng.randint(2, 6), self._purchase(order, "purchase_after_refund")))
            return refund
        if scenario in ("duplicate", "redelivery"):
            if not self.sent:
                return self._make("order")
            original = rng.choice(self.sent[-200:])
            if scenario == "duplicate":  # the exact same delivery again: same id, same body
                return Webhook("duplicate", original.event_id, original.event_type, original.body,
                               original.customer_id, original.uid, original.expected, original.dlq)
            payload = json.loads(original.body)  # PayNow re-delivers the same business event under a new id
            payload["id"] = self._id("evt")
            return Webhook("redelivery", payload["id"], original.event_type,
                           json.dumps(payload, separators=(",", ":")).encode(), original.customer_id, original.uid,
                           original.expected, original.dlq)
        if scenario in ("legacy_v1", "legacy_v2"):
            return self._legacy(int(scenario[-1]))
        raise ValueError(f"unknown scenario {scenario!r}")


@dataclass
class Stats:
    """Live counters of a run (the progress line and the final summary)."""

    sent: int = 0
    accepted: int = 0
    failed: int = 0
    retried: int = 0
    legacy: int = 0
    in_flight: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    by_region: dict[str, int] = field(default_factory=dict)

    def p95(self) -> float:
        if not self.latencies_ms:
            return 0.0
        return percentile(sorted(self.latencies_ms), 0.95)

    def line(self, elapsed: float) -> str:
        regions = " ".join(f"{r}={n}" for r, n in sorted(self.by_region.items()))
        return (f"[{elapsed:5.1f}s] sent {self.sent} accepted {self.accepted} failed {self.failed} "
                f"retried {self.retried} legacy {self.legacy} in-flight {self.in_flight} "
                f"p95 {self.p95():.1f} ms  {regions}")


@dataclass
class RetryPolicy:
    """PayNow re-sends on any non-2xx: retryable statuses and connection errors, with exponential backoff."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 2.0
    timeout: float = 10.0


class Recorder:
    """Appends one JSON line per webhook (with every attempt's answer) or legacy publish to the run's log."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


async def send_webhook(client: httpx.AsyncClient, url: str, secret: str, hook: Webhook,
                       policy: RetryPolicy) -> dict[str, Any]:
    """POST one webhook like PayNow (retrying non-2xx with backoff); the record of every attempt and the outcome."""
    attempts: list[dict[str, Any]] = []
    record: dict[str, Any] = {"kind": "webhook", "scenario": hook.scenario, "eventId": hook.event_id,
                              "eventType": hook.event_type, "customerId": hook.customer_id, "uid": hook.uid,
                              "expected": hook.expected, "dlq": hook.dlq, "sentAt": int(time.time() * 1000),
                              "attempts": attempts, "status": None, "region": None, "ok": False}
    for attempt in range(policy.attempts):
        started = time.perf_counter()
        entry: dict[str, Any] = {"at": int(time.time() * 1000)}
        retry_after = 0.0
        try:
            response = await client.post(url, content=hook.body, headers=signed_headers(secret, hook.body),
                                         timeout=policy.timeout)
            entry["status"] = response.status_code
            with contextlib.suppress(ValueError):
                answer = response.json()
                if isinstance(answer, dict):
                    entry["region"] = answer.get("region")
                    if answer.get("error"):
                        entry["error"] = answer["error"]
            with contextlib.suppress(ValueError):
                retry_after = float(response.headers.get("retry-after", 0))
        except httpx.HTTPError as exc:
            entry["status"] = None
            entry["error"] = type(exc).__name__
        entry["ms"] = round((time.perf_counter() - started) * 1000, 2)
        attempts.append(entry)
        status = entry["status"]
        if status is not None and 200 <= status < 300:
            record.update(status=status, region=entry.get("region"), ok=True)
            return record
        record["status"] = status
        if status is not None and status not in RETRYABLE:
            return record
        if attempt + 1 < policy.attempts:
            delay = min(policy.max_delay, max(retry_after, policy.base_delay * 2 ** attempt))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
    return record


@dataclass
class Publisher:
    """Publishes legacy messages straight onto the main topic (ordering keys on, like the ingress)."""

    topic: str
    _client: Any = None

    def __post_init__(self) -> None:
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))

    def publish(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str:
        future = self._client.publish(self.topic, data, ordering_key=ordering_key, **attributes)
        return str(future.result(timeout=30))


async def run(*, target: str, secret: str, rate: float, duration: float, log_path: Path,
              mix: Mix, publisher: Publisher | None = None, policy: RetryPolicy | None = None,
              progress: Callable[[str], None] | None = None, stop: asyncio.Event | None = None,
              transport: httpx.AsyncBaseTransport | None = None, max_in_flight: int = 256) -> Stats:
    """Send `mix` open-loop at `rate`/s for `duration` s to `target` (LB or ingress base URL); record to log_path.

    Open loop: the n-th webhook starts at t0 + n/rate whatever happened to earlier ones, as PayNow would, up to
    `max_in_flight` unanswered webhooks; beyond that the sender itself is saturated, so it waits rather than spiral
    (the shortfall shows in the achieved rate).
    Legacy actions are published onto the topic when a publisher is given and skipped otherwise.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    policy = policy or RetryPolicy()
    stats = Stats()
    url = target.rstrip("/") + WEBHOOK_PATH
    recorder = Recorder(log_path)
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)

    slots = asyncio.Semaphore(max_in_flight)

    async def one(client: httpx.AsyncClient, action: Action) -> None:
        stats.in_flight += 1
        try:
            if isinstance(action, Legacy):
                assert publisher is not None
                message_id = await asyncio.to_thread(publisher.publish, action.data, action.attributes,
                                                     action.ordering_key)
                stats.legacy += 1
                recorder.write({"kind": "legacy", "scenario": action.scenario, "eventId": action.event_id,
                                "eventType": action.event_type, "version": action.version,
                                "expected": action.expected, "dlq": action.dlq, "messageId": message_id,
                                "sentAt": int(time.time() * 1000), "ok": True})
                return
            record = await send_webhook(client, url, secret, action, policy)
            stats.sent += 1
            stats.retried += len(record["attempts"]) > 1
            if record["ok"]:
                stats.accepted += 1
                stats.latencies_ms.append(record["attempts"][-1]["ms"])
                region = record["region"] or "?"
                stats.by_region[region] = stats.by_region.get(region, 0) + 1
            else:
                stats.failed += 1
            recorder.write(record)
        finally:
            stats.in_flight -= 1
            slots.release()

    started = time.monotonic()
    last_progress = 0.0
    try:
        async with httpx.AsyncClient(limits=limits, transport=transport) as client:
            n = 0
            while True:
                now = time.monotonic() - started
                if now >= duration or (stop is not None and stop.is_set()):
                    break
                due = n / rate
                if due > now:
                    await asyncio.sleep(min(due - now, 0.25))
                    continue
                action = mix.next()
                if isinstance(action, Legacy) and publisher is None:
                    n += 1
                    continue
                await slots.acquire()
                task = asyncio.create_task(one(client, action))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                if progress and now - last_progress >= 1.0:
                    progress(stats.line(now))
                    last_progress = now
            if tasks:
                await asyncio.gather(*tasks)
    finally:
        recorder.write({"kind": "summary", "sent": stats.sent, "accepted": stats.accepted, "failed": stats.failed,
                        "retried": stats.retried, "legacy": stats.legacy, "byRegion": stats.by_region,
                        "target": target, "rate": rate, "duration": duration, "runId": mix.run_id})
        recorder.close()
    if progress:
        progress(stats.line(time.monotonic() - started))
    return stats


def stderr_progress(line: str) -> None:
    """A progress line that rewrites itself on a terminal and is one line per second in a log."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()
    else:
        sys.stderr.write(line + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a traffic log (webhooks and legacy publishes; summaries left out)."""
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                break  # a generator still writing this log: its last line is not complete yet
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f"{path}:{number}: not a JSON line") from None
            if record.get("kind") in ("webhook", "legacy"):
                records.append(record)
    return records
