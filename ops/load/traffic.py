"""A PayNow stand-in: a seeded mix of real PayNow deliveries, signed and sent open-loop at a rate, with a JSONL record.

Every webhook is built with schemas.deliveries (PayNow's published definitions), never typed by hand. The mix says
nothing about what the ledger should become: the record holds each delivery and its answer, and the judge
(ops/load/ledger_model.py, an independent model of the rules) recomputes the expected state from it.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops.admin.catalog import KNOWN_PRODUCTS, points
from ops.load.stats import Reservoir, percentile
from ops.load.traffic_log import Recorder
from schemas import customer_ordering_key, deliveries, encode_legacy
from schemas.signing import signed_headers

ONE_TIME = sorted(p for p, v in KNOWN_PRODUCTS.items() if v["kind"] == "one_time")
SUBSCRIPTIONS = sorted(p for p, v in KNOWN_PRODUCTS.items() if v["kind"] == "subscription")
UNKNOWN_PRODUCT = "999999999999999999"  # in no catalog: its order is dead-lettered as unmapped_product
WEBHOOK_PATH = "/webhooks/paynow"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
POOL_CONNECTIONS = 16
"""Connections per HTTP client of the sender (it keeps max_in_flight / POOL_CONNECTIONS clients)."""
REFUND_STATUSES = ("created", "approved", "processing", "completed", "canceled", "failed")
CHARGEBACK_OPEN = "open"
CLOSINGS = ("won", "lost")
NO_EFFECT_TYPES = (
    "ON_PAYMENT_COMPLETED", "ON_PAYMENT_FAILED", "ON_DELIVERY_ITEM_ADDED", "ON_DELIVERY_ITEM_ACTIVATED",
    "ON_DELIVERY_ITEM_USED", "ON_DELIVERY_ITEM_REVOKED", "ON_DELIVERY_ITEM_EXPIRED", "ON_DELIVERY_ITEM_RENEWED",
    "ON_TRIAL_ACTIVATED", "ON_TRIAL_COMPLETED", "ON_TRIAL_CANCELED", "ON_SUBSCRIPTION_CANCELED",
    "ON_SOMETHING_NEW",  # a type PayNow may add tomorrow: accepted and ignored, never dead-lettered
)
FUTURE_TYPES = frozenset({"ON_SOMETHING_NEW"})

# Scenario weights of the mix (relative). Duplicates and re-sends repeat earlier deliveries; early refunds send a
# refund and hold its order back a few actions (PayNow delivers out of order); `order_uid_and_mapping` sends an order
# of a mapped customer with the uid in its checkout and holds back a re-send of it without the uid.
WEIGHTS: dict[str, int] = {
    "order": 22, "mapped_order": 6, "order_uid_and_mapping": 3, "sub_activate": 6, "sub_renew": 8, "refund": 9,
    "refund_early": 2, "chargeback": 3, "chargeback_closed": 3, "no_effect": 8, "duplicate": 6, "resend": 4,
    "unmapped": 3, "unknown_product": 1, "legacy_v1": 2, "legacy_v2": 3,
}
HELD = frozenset({"order_after_refund", "order_via_mapping"})
"""Scenarios of held-back deliveries (sent some actions after the one that scheduled them)."""


@dataclass
class Webhook:
    """One PayNow delivery to POST (`body` is its wire form); `uid` is who the mix meant it for (None: nobody)."""

    scenario: str
    delivery: dict[str, Any]
    customer_id: str | None
    uid: str | None
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.body:
            self.body = deliveries.encode(self.delivery)

    @property
    def event_id(self) -> str:
        return str(self.delivery["event_id"])

    @property
    def event_type(self) -> str:
        return str(self.delivery["event_type"])


@dataclass
class Legacy:
    """A v1/v2 envelope published straight onto the topic, as an old producer would.

    `delivery` is the PayNow delivery the record stands for (v2: an order, which the judge's model credits); None for
    v1, which no reader accepts any more: `verdict` is what the pipeline must dead-letter it as.
    """

    scenario: str
    event_id: str
    event_type: str
    version: int
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    delivery: dict[str, Any] | None = None
    verdict: str | None = None


Action = Webhook | Legacy


@dataclass
class _Order:
    order_id: str
    customer_id: str
    uid: str | None
    refund_id: str | None = None
    payment_id: str | None = None
    charged_back: bool = False
    reversed: bool = False  # a completed refund or a chargeback was sent for it


@dataclass
class _Sub:
    sub_id: str
    product_id: str
    customer_id: str
    uid: str | None
    cycle: int = 0


class Mix:
    """A deterministic stream of PayNow deliveries for one run: `next()` gives the next action (seeded).

    Ids are scoped to the run (`run_id`), so a judge can tell a run's users, orders and keys apart. `mapped_customers`
    ({customerId: uid}) are customers whose mapping exists in `paynowCustomers` (seed them before sending); without
    any, the scenarios that need one fall back to a plain order.
    """

    def __init__(self, *, seed: int = 0, run_id: str | None = None, users: int = 25,
                 mapped_customers: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, legacy: bool = True) -> None:
        self.rng = random.Random(seed)
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.users = [(f"cus_{self.run_id}_{i}", f"user_{self.run_id}_{i}") for i in range(users)]
        self.mapped = dict(mapped_customers or {})
        weights = dict(WEIGHTS if weights is None else weights)
        if not legacy:
            weights.pop("legacy_v1", None)
            weights.pop("legacy_v2", None)
        unknown = set(weights) - set(WEIGHTS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {sorted(WEIGHTS)}")
        self.scenarios = [s for s, w in weights.items() if w > 0]
        self.weights = [weights[s] for s in self.scenarios]
        if not self.scenarios:
            raise ValueError("no scenario has a positive weight")
        self.count = 0
        self.webhooks = 0
        self.orders: list[_Order] = []
        self.subscriptions: list[_Sub] = []
        self.pending_subs: list[_Sub] = []  # subscription lines of orders, activated by a later sub_activate
        self.sent: list[Webhook] = []
        self.held: list[tuple[int, Webhook]] = []  # (due webhook index, delivery held back)
        # statuses and no-effect types take turns (from a seeded start), so a short run still sees every one
        self.turns = {name: self.rng.randrange(len(values)) for name, values in
                      (("refund", REFUND_STATUSES), ("closing", CLOSINGS), ("no_effect", NO_EFFECT_TYPES))}

    @staticmethod
    def mapped_customers_for(run_id: str, n: int = 3) -> dict[str, str]:
        """The customer -> uid mappings a run with this id uses (seed them before sending)."""
        return {f"cus_{run_id}_mapped_{i}": f"user_{run_id}_mapped_{i}" for i in range(n)}

    def catalog(self) -> dict[str, int]:
        """product id -> points of the catalog this mix is priced against (the known PayNow products)."""
        return points(KNOWN_PRODUCTS)

    def context(self) -> dict[str, Any]:
        """What a judge needs besides the deliveries: the run id, the catalog and the customer mappings."""
        return {"kind": "run", "runId": self.run_id, "catalog": self.catalog(), "customers": dict(self.mapped)}

    # -- building blocks -----------------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.run_id}_{self.count}"

    def _user(self) -> tuple[str, str]:
        return self.rng.choice(self.users)

    def _lines(self, n: int, customer_id: str, uid: str | None, *, subscription_line: bool = False,
               products: Iterable[str] = ()) -> list[dict[str, Any]]:
        chosen = list(products) or [self.rng.choice(ONE_TIME) for _ in range(n)]
        lines = [deliveries.order_line(self._id("line"), product, self.rng.choice((1, 1, 1, 2, 3)),
                                       price_cents=self.rng.randint(1, 99) * 100 + 99) for product in chosen]
        if subscription_line:  # its cycles credit it (a later ON_SUBSCRIPTION_ACTIVATED), never the order
            sub = _Sub(self._id("sub"), self.rng.choice(SUBSCRIPTIONS), customer_id, uid)
            self.pending_subs.append(sub)
            line = deliveries.order_line(self._id("line"), sub.product_id, 1, subscription_id=sub.sub_id,
                                         price_cents=999)
            lines.insert(self.rng.randint(0, len(lines)), line)
        return lines

    def _order(self, scenario: str, customer_id: str, uid_in_checkout: str | None, owner: str | None,
               lines: list[dict[str, Any]], *, remember: bool = True) -> Webhook:
        order = _Order(self._id("ord"), customer_id, owner)
        if remember:
            self._remember(order)
        delivery = deliveries.order_completed(self._id("evt"), order.order_id, customer_id, lines,
                                              uid=uid_in_checkout)
        return Webhook(scenario, delivery, customer_id, owner)

    def _n_lines(self) -> int:
        return self.rng.choice((1, 1, 1, 2, 2, 3, 4, 5))

    def _remember(self, order: _Order) -> None:
        self.orders.append(order)
        if len(self.orders) > 2000:  # refunds and chargebacks pick from the recent past; bound long runs
            del self.orders[:500]

    def _past_order(self, *, unreversed: bool = False) -> _Order | None:
        """A recent order of a known user; `unreversed`: preferably one nothing has reversed yet (so what a refund
        of another status must NOT do shows in the wallet, instead of hiding behind an earlier reversal)."""
        recent = [o for o in self.orders[-500:] if o.uid is not None]
        fresh = [o for o in recent if not o.reversed] if unreversed else []
        pool = fresh or recent
        return self.rng.choice(pool) if pool else None

    def _turn(self, name: str, values: tuple[str, ...]) -> str:
        self.turns[name] += 1
        return values[self.turns[name] % len(values)]

    def _hold(self, hook: Webhook, low: int = 2, high: int = 6) -> None:
        self.held.append((self.webhooks + self.rng.randint(low, high), hook))
        self.held.sort(key=lambda item: item[0])

    # -- the stream ----------------------------------------------------------------------------------------
    def next(self) -> Action:
        """The next action of the mix."""
        if self.held and self.held[0][0] <= self.webhooks:
            return self._record(self.held.pop(0)[1])
        scenario = self.rng.choices(self.scenarios, self.weights)[0]
        action = self._make(scenario)
        return self._record(action) if isinstance(action, Webhook) else action

    def _record(self, hook: Webhook) -> Webhook:
        self.webhooks += 1
        self.sent.append(hook)
        if len(self.sent) > 5000:  # bound memory on long runs; duplicates come from the recent past
            del self.sent[:1000]
        return hook

    def _make(self, scenario: str) -> Action:
        maker: Callable[[str], Action] = getattr(self, "_make_" + scenario)
        return maker(scenario)

    def _make_order(self, scenario: str) -> Action:
        customer_id, uid = self._user()
        lines = self._lines(self._n_lines(), customer_id, uid, subscription_line=self.rng.random() < 0.2)
        return self._order(scenario, customer_id, uid, uid, lines)

    def _make_mapped_order(self, scenario: str) -> Action:
        if not self.mapped:
            return self._make_order("order")
        customer_id, uid = self.rng.choice(sorted(self.mapped.items()))
        lines = self._lines(self._n_lines(), customer_id, uid, subscription_line=self.rng.random() < 0.2)
        return self._order(scenario, customer_id, None, uid, lines)

    def _make_order_uid_and_mapping(self, scenario: str) -> Action:
        """One order sent twice: with the uid in checkout.metadata, and re-sent later with only the mapped customer."""
        if not self.mapped:
            return self._make_order("order")
        customer_id, uid = self.rng.choice(sorted(self.mapped.items()))
        first = self._order(scenario, customer_id, uid, uid, self._lines(self._n_lines(), customer_id, uid))
        again = copy.deepcopy(first.delivery)
        again["event_id"] = self._id("evt")
        again["body"]["checkout"]["metadata"] = {}
        self._hold(Webhook("order_via_mapping", again, customer_id, uid))
        return first

    def _make_unmapped(self, scenario: str) -> Action:
        customer_id = self._id("cus_unmapped")
        if self.rng.random() < 0.25:  # an unmapped subscriber: its cycle has nobody to credit either
            sub = _Sub(self._id("sub"), self.rng.choice(SUBSCRIPTIONS), customer_id, None)
            return self._cycle(scenario, sub)
        return self._order(scenario, customer_id, None, None, self._lines(self._n_lines(), customer_id, None),
                           remember=False)

    def _make_unknown_product(self, scenario: str) -> Action:
        customer_id, uid = self._user()
        lines = self._lines(0, customer_id, uid, products=[self.rng.choice(ONE_TIME), UNKNOWN_PRODUCT])
        return self._order(scenario, customer_id, uid, uid, lines, remember=False)

    def _cycle(self, scenario: str, sub: _Sub) -> Webhook:
        sub.cycle += 1
        delivery = deliveries.subscription_cycle(self._id("evt"), sub.sub_id, sub.product_id, sub.cycle,
                                                 sub.customer_id, uid=sub.uid, renewed=sub.cycle > 1)
        return Webhook(scenario, delivery, sub.customer_id, sub.uid)

    def _make_sub_activate(self, scenario: str) -> Action:
        if self.pending_subs:  # a subscription bought in an order starts its first cycle
            sub = self.pending_subs.pop(0)
        elif self.mapped and self.rng.random() < 0.3:  # a mapped subscriber: no uid in the checkout
            customer_id, uid = self.rng.choice(sorted(self.mapped.items()))
            sub = _Sub(self._id("sub"), self.rng.choice(SUBSCRIPTIONS), customer_id, None)
            self.subscriptions.append(sub)
            hook = self._cycle(scenario, sub)
            hook.uid = uid
            return hook
        else:
            customer_id, uid = self._user()
            sub = _Sub(self._id("sub"), self.rng.choice(SUBSCRIPTIONS), customer_id, uid)
        self.subscriptions.append(sub)
        if len(self.subscriptions) > 2000:
            del self.subscriptions[:500]
        return self._cycle(scenario, sub)

    def _make_sub_renew(self, scenario: str) -> Action:
        if not self.subscriptions:
            return self._make_sub_activate("sub_activate")
        hook = self._cycle(scenario, self.rng.choice(self.subscriptions))
        if hook.uid is None:
            hook.uid = self.mapped.get(hook.customer_id or "")
        return hook

    def _refund(self, scenario: str, order: _Order, status: str) -> Webhook:
        order.refund_id = order.refund_id or self._id("ref")
        customer = order.customer_id if self.rng.random() < 0.5 else None  # PayNow's refund customer is nullable
        delivery = deliveries.refund(self._id("evt"), order.refund_id, order.order_id, status, customer_id=customer)
        return Webhook(scenario, delivery, customer, order.uid)

    def _make_refund(self, scenario: str) -> Action:
        order = self._past_order(unreversed=True)
        if order is None:
            return self._make_order("order")
        status = self._turn("refund", REFUND_STATUSES)
        order.reversed |= status == "completed"
        return self._refund(scenario, order, status)

    def _make_refund_early(self, scenario: str) -> Action:
        """A completed refund delivered before its order (the order is held back a few deliveries)."""
        customer_id, uid = self._user()
        order = self._order("order_after_refund", customer_id, uid, uid,
                            self._lines(self._n_lines(), customer_id, uid))
        self.orders[-1].reversed = True
        refund = self._refund(scenario, self.orders[-1], "completed")
        self._hold(order)
        return refund

    def _chargeback(self, scenario: str, order: _Order, status: str, *, closed: bool) -> Webhook:
        order.payment_id = order.payment_id or self._id("pay")
        customer = order.customer_id if self.rng.random() < 0.5 else None
        delivery = deliveries.chargeback(self._id("evt"), order.payment_id, order.order_id, status, closed=closed,
                                         customer_id=customer)
        return Webhook(scenario, delivery, customer, order.uid)

    def _make_chargeback(self, scenario: str) -> Action:
        order = self._past_order(unreversed=True)
        if order is None:
            return self._make_order("order")
        order.charged_back = order.reversed = True
        return self._chargeback(scenario, order, CHARGEBACK_OPEN, closed=False)

    def _make_chargeback_closed(self, scenario: str) -> Action:
        """Mostly the closing of an opened chargeback; sometimes one whose opening was lost (never sent)."""
        opened = [o for o in self.orders[-500:] if o.charged_back]
        order = self.rng.choice(opened) if opened and self.rng.random() < 0.8 else self._past_order(unreversed=True)
        if order is None:
            return self._make_order("order")
        order.reversed = True
        return self._chargeback(scenario, order, self._turn("closing", CLOSINGS), closed=True)

    def _make_no_effect(self, scenario: str) -> Action:
        event_type = self._turn("no_effect", NO_EFFECT_TYPES)
        order = self._past_order()
        customer_id = order.customer_id if order else self._user()[0]
        delivery = deliveries.no_effect(event_type, self._id("evt"), customer_id=customer_id,
                                        order_id=order.order_id if order else None)
        return Webhook(scenario, delivery, customer_id, None)

    def _make_duplicate(self, scenario: str) -> Action:
        """The exact same delivery again: same event_id, same bytes (PayNow retried an answer it did not get)."""
        if not self.sent:
            return self._make_order("order")
        original = self.rng.choice(self.sent[-200:])
        return Webhook(scenario, original.delivery, original.customer_id, original.uid, original.body)

    def _make_resend(self, scenario: str) -> Action:
        """The same business event under a new event_id (PayNow re-sent it as a new delivery)."""
        if not self.sent:
            return self._make_order("order")
        original = self.rng.choice(self.sent[-200:])
        delivery = copy.deepcopy(original.delivery)
        delivery["event_id"] = self._id("evt")
        return Webhook(scenario, delivery, original.customer_id, original.uid)

    def _make_legacy_v1(self, scenario: str) -> Action:
        event_id = self._id("evt")
        customer_id, uid = self._user()
        order = deliveries.order_completed(event_id, self._id("ord"), customer_id,
                                           self._lines(1, customer_id, uid), uid=uid)
        record = {"version": 1, "eventId": event_id, "eventType": "ON_ORDER_COMPLETED",
                  "payloadJson": json.dumps(order["body"], separators=(",", ":"))}
        return Legacy(scenario, event_id, "ON_ORDER_COMPLETED", 1, encode_legacy(1, record),
                      {"version": "1", "eventId": event_id, "eventType": "ON_ORDER_COMPLETED"},
                      customer_ordering_key(customer_id),
                      verdict="drop_incompatible")

    def _make_legacy_v2(self, scenario: str) -> Action:
        """An order as the v2 producer wrote it; `delivery` is the same order as a PayNow delivery (for the judge)."""
        event_id = self._id("evt")
        customer_id, uid = self._user()
        order_id = self._id("ord")
        lines = self._lines(self.rng.randint(1, 3), customer_id, uid)
        delivery = deliveries.order_completed(event_id, order_id, customer_id, lines, uid=uid)
        self._remember(_Order(order_id, customer_id, uid))
        record = {"version": 2, "eventId": event_id, "eventType": "ON_ORDER_COMPLETED",
                  "timestamp": int(time.time() * 1000),
                  "data": {"orderId": order_id, "prettyId": order_id.upper(),
                           "customer": {"id": customer_id, "email": None, "uid": uid},
                           "lines": [{"productId": line["product_id"], "quantity": line["quantity"],
                                      "price": f"{line['price'] / 100:.2f}"} for line in lines],
                           "subscription": None}}
        return Legacy(scenario, event_id, "ON_ORDER_COMPLETED", 2, encode_legacy(2, record),
                      {"version": "2", "eventId": event_id, "eventType": "ON_ORDER_COMPLETED"},
                      customer_ordering_key(customer_id),
                      delivery=delivery)


@dataclass
class Stats:
    """Live counters of a run (the progress line and the final summary)."""

    sent: int = 0
    accepted: int = 0
    failed: int = 0
    retried: int = 0
    legacy: int = 0
    in_flight: int = 0
    latencies_ms: Reservoir = field(default_factory=Reservoir)  # bounded: `make run` sends for days
    by_region: dict[str, int] = field(default_factory=dict)

    def p95(self) -> float:
        if not self.latencies_ms:
            return 0.0
        return percentile(self.latencies_ms, 0.95)

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


async def send_webhook(client: httpx.AsyncClient, url: str, secret: str, hook: Webhook,
                       policy: RetryPolicy) -> dict[str, Any]:
    """POST one webhook like PayNow (retrying non-2xx with backoff); the record of every attempt and the outcome."""
    attempts: list[dict[str, Any]] = []
    record: dict[str, Any] = {"kind": "webhook", "scenario": hook.scenario, "eventId": hook.event_id,
                              "eventType": hook.event_type, "customerId": hook.customer_id, "uid": hook.uid,
                              "delivery": hook.delivery, "sentAt": int(time.time() * 1000),
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
        import google.cloud.pubsub_v1 as pubsub_v1

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
    recorder.write(mix.context())
    tasks: set[asyncio.Task[None]] = set()
    # httpcore's pool scans every connection and every queued request on each request, so one pool of hundreds
    # costs milliseconds per webhook once answers slow down (the sender then falls behind for good: 25/s of 100/s
    # on a busy machine). Small pools, round-robin, keep that scan short.
    limits = httpx.Limits(max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS)

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
                                "delivery": action.delivery, "verdict": action.verdict, "messageId": message_id,
                                "sentAt": int(time.time() * 1000), "ok": True})
                return
            record = await send_webhook(client, url, secret, action, policy)
            stats.sent += 1
            stats.retried += len(record["attempts"]) > 1
            if record["ok"]:
                stats.accepted += 1
                stats.latencies_ms.add(record["attempts"][-1]["ms"])
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
        async with contextlib.AsyncExitStack() as clients:
            tls = ssl.create_default_context()  # one for all clients: each would load the CA bundle again
            pool = [await clients.enter_async_context(httpx.AsyncClient(limits=limits, transport=transport,
                                                                        verify=tls))
                    for _ in range(max(1, max_in_flight // POOL_CONNECTIONS))]
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
                task = asyncio.create_task(one(pool[n % len(pool)], action))
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
