"""The chaos drill: traffic through the LB while an ingress and a pipeline are killed -9 and each emulator is frozen
(SIGSTOP) and thawed at random times; afterwards the independent ledger model and the audit must agree."""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from ops.admin import audit
from ops.admin.catalog import KNOWN_PRODUCTS, map_customer
from ops.load import traffic_log
from ops.load.ledger_model import LedgerModel
from ops.local.process import Process
from schemas import deliveries
from schemas.signing import signed_headers

if TYPE_CHECKING:
    from ops.load.drills import Drills, Result

DEFAULT_RATE = 20.0  # webhooks/s: the stack, two pipelines and both emulators share a small machine
FREEZE_SECONDS = (8.0, 25.0)
RESTART_AFTER_S = 5.0
SETTLE_TIMEOUT_S = 300.0
WEBHOOK_PATH = "/webhooks/paynow"
ATTEMPTS = 8  # PayNow's re-sends of a webhook that got no 2xx
ONE_TIME = [p for p, d in KNOWN_PRODUCTS.items() if d["kind"] == "one_time" and d["active"]]
CYCLED = [p for p, d in KNOWN_PRODUCTS.items() if d["kind"] == "subscription" and d["active"]]


@dataclass
class ChaosMix:
    """Seeded PayNow deliveries in the shape PayNow sends (schemas.deliveries), which the model reads as they are.

    Orders with a uid, orders of mapped and of unknown customers (unmapped_customer), refunds, chargebacks,
    subscription cycles, and exact re-sends of earlier deliveries.
    """

    run_id: str
    seed: int
    users: int = 20
    rng: random.Random = field(init=False)
    mapped: dict[str, str] = field(init=False)
    sent: list[dict[str, Any]] = field(default_factory=list)
    orders: list[tuple[str, str]] = field(default_factory=list)
    cycles: dict[str, int] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.mapped = {f"cus_{self.run_id}_m{i}": f"u_{self.run_id}_m{i}" for i in range(3)}

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.run_id}_{self.count}"

    def _order(self, customer: str, uid: str | None) -> dict[str, Any]:
        order_id = self._id("ord")
        lines = [deliveries.order_line(f"{order_id}-{n}", self.rng.choice(ONE_TIME), self.rng.choice((1, 1, 2)))
                 for n in range(self.rng.choice((1, 1, 2)))]
        self.orders.append((order_id, customer))
        return deliveries.order_completed(self._id("evt"), order_id, customer, lines, uid=uid)

    def next(self) -> tuple[str, dict[str, Any]]:
        r = self.rng.random()
        k = self.rng.randrange(self.users)
        customer, uid = f"cus_{self.run_id}_{k}", f"u_{self.run_id}_{k}"
        if r < 0.45 or not self.orders:
            scenario, delivery = "order", self._order(customer, uid)
        elif r < 0.55:
            customer = self.rng.choice(list(self.mapped))
            scenario, delivery = "order_mapped_customer", self._order(customer, None)
        elif r < 0.60:
            scenario, delivery = "order_unmapped_customer", self._order(f"cus_{self.run_id}_nobody", None)
        elif r < 0.70:
            order_id, customer = self.rng.choice(self.orders)
            delivery = deliveries.refund(self._id("evt"), self._id("rf"), order_id, "completed", customer_id=customer)
            scenario = "refund"
        elif r < 0.77:
            order_id, customer = self.rng.choice(self.orders)
            delivery = deliveries.chargeback(self._id("evt"), self._id("pay"), order_id, "pending",
                                             customer_id=customer)
            scenario = "chargeback"
        elif r < 0.90:
            sub_id = f"sub_{self.run_id}_{k}"
            self.cycles[sub_id] = self.cycles.get(sub_id, 0) + 1
            delivery = deliveries.subscription_cycle(self._id("evt"), sub_id, CYCLED[k % len(CYCLED)],
                                                     self.cycles[sub_id], customer, uid=uid,
                                                     renewed=self.cycles[sub_id] > 1)
            scenario = "subscription_cycle"
        else:
            scenario, delivery = "resend", self.rng.choice(self.sent)
        self.sent.append(delivery)
        return scenario, delivery


def emulator_of(drills: Drills, kind: str) -> Process | None:
    """The stack's own emulator of `kind` (from its stack.json), None if it reused one started elsewhere."""
    owned = drills.stack.info.get("emulators", {}).get("owned", [])
    return next((Process.attached(f"{kind}-emulator", int(e["pid"]), e.get("started"))
                 for e in owned if e["kind"] == kind and e.get("pid")), None)


@contextlib.asynccontextmanager
async def frozen(process: Process) -> AsyncIterator[None]:
    """The process's group stopped (SIGSTOP) for the block and continued (SIGCONT) whatever happens."""
    process.freeze()
    try:
        yield
    finally:
        process.thaw()


RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


async def _post(client: httpx.AsyncClient, url: str, secret: str, scenario: str,
                delivery: dict[str, Any]) -> dict[str, Any]:
    """POST one delivery as PayNow does (re-sent on a retryable answer or a connection error, with backoff);
    a record in the shape the audit's wait_accounted reads."""
    body = deliveries.encode(delivery)
    record: dict[str, Any] = {"kind": "webhook", "scenario": scenario, "eventId": delivery["event_id"],
                              "ok": False, "status": None, "region": None, "attempts": 0}
    for attempt in range(ATTEMPTS):
        record["attempts"] = attempt + 1
        try:
            response = await client.post(url, content=body, headers=signed_headers(secret, body), timeout=10.0)
            record["status"] = response.status_code
            if 200 <= response.status_code < 300:
                with contextlib.suppress(ValueError, AttributeError):
                    record["region"] = response.json().get("region")
                record["ok"] = True
                return record
            if response.status_code not in RETRYABLE:
                return record
        except httpx.HTTPError:
            record["status"] = None
        await asyncio.sleep(min(4.0, 0.2 * 2 ** attempt) * random.uniform(0.5, 1.0))
    return record


async def _send(drills: Drills, mix: ChaosMix, rate: float, duration: float) -> list[tuple[dict[str, Any],
                                                                                          dict[str, Any]]]:
    """Open-loop PayNow traffic through the LB: (delivery, its record) pairs."""
    url = drills.stack.info["target"].rstrip("/") + WEBHOOK_PATH
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    started = time.monotonic()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=256)) as client:
        tasks = []

        async def one(scenario: str, delivery: dict[str, Any]) -> None:
            out.append((delivery, await _post(client, url, drills.stack.secret, scenario, delivery)))

        n = 0
        while time.monotonic() - started < duration:
            scenario, delivery = mix.next()
            tasks.append(asyncio.create_task(one(scenario, delivery)))
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return out


async def _faults(drills: Drills, rng: random.Random, duration: float, log: list[str]) -> None:
    """Each fault at its own random time in the middle of the traffic; every freeze is thawed whatever happens."""
    from ops.local.stack import PRIMARY

    def at(offset: float, what: str) -> None:
        log.append(f"{offset:5.1f} s  {what}")
        drills._say(f"chaos: {what}")

    async def kill(name: str, start: float) -> None:
        await asyncio.sleep(start)
        at(start, f"kill -9 {name}")
        await asyncio.to_thread(drills.stack.kill, name)
        await asyncio.sleep(RESTART_AFTER_S)
        at(start + RESTART_AFTER_S, f"restart {name}")
        await asyncio.to_thread(drills.stack.restart, name)

    async def freeze(kind: str, start: float) -> None:
        await asyncio.sleep(start)
        emulator = emulator_of(drills, kind)
        if emulator is None:
            at(start, f"{kind} emulator not started by this stack: not frozen")
            return
        seconds = rng.uniform(*FREEZE_SECONDS)
        at(start, f"freeze {kind} emulator (SIGSTOP) for {seconds:.0f} s")
        try:
            async with frozen(emulator):
                await asyncio.sleep(seconds)
        finally:
            at(start + seconds, f"thaw {kind} emulator (SIGCONT)")

    ingress = f"ingress-{rng.choice(list(drills.stack.config.regions))}"
    window = (0.1 * duration, 0.6 * duration)
    faults: list[Awaitable[None]] = [kill(ingress, rng.uniform(*window)),
                                     kill(f"pipeline-{PRIMARY}", rng.uniform(*window)),
                                     freeze("firestore", rng.uniform(*window)), freeze("pubsub", rng.uniform(*window))]
    await asyncio.gather(*faults)


def _firestore_wallets(drills: Drills, uids: set[str]) -> dict[str, int]:
    refs = [drills.db.document(f"users/{uid}/wallet/points") for uid in sorted(uids)]
    return {s.reference.parent.parent.id: int(s.get("paidBalance")) for s in drills.db.get_all(refs) if s.exists}


def drill_chaos(drills: Drills, result: Result) -> None:
    """Traffic through the LB with the four faults; then 0 lost, 0 double-credited, 0 transient faults in the DLQ,
    and the model's wallets equal Firestore's."""
    from ops.admin import dlq as dlq_tools

    duration = drills.duration if drills.duration is not None else 90.0
    rate = drills.rate if drills.rate is not None else DEFAULT_RATE
    run_id = uuid.uuid4().hex[:8]
    seed = int(run_id, 16)
    mix = ChaosMix(run_id, seed)
    for customer, uid in mix.mapped.items():
        map_customer(drills.db, customer, uid)
    log: list[str] = []

    async def main() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        sending = asyncio.create_task(_send(drills, mix, rate, duration))
        await _faults(drills, random.Random(seed), duration, log)
        return await sending

    drills._say(f"chaos: {rate:g}/s for {duration:g} s through {drills.stack.info['target']} (seed {seed})")
    sent = asyncio.run(main())
    thawed = time.monotonic()
    records = [record for _, record in sent]
    path = drills.stack.traffic_dir / f"chaos-{time.strftime('%H%M%S')}-{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(traffic_log.line(r) for r in records))
    for line in log:
        result.add("fault", line)

    accepted = [delivery for delivery, record in sent if record["ok"]]
    result.add("webhooks sent", len(sent))
    result.add("webhooks accepted (2xx, after PayNow's retries)", len(accepted))
    result.add("webhooks never accepted (PayNow gives up; not the ledger's)", len(sent) - len(accepted))
    missing, waited = audit.wait_accounted(drills.db, records, SETTLE_TIMEOUT_S)
    result.add("time from the last fault/traffic to every event accounted", f"{time.monotonic() - thawed:.1f} s")
    result.add("lost (accepted, neither committed nor in the DLQ)", missing, "0", missing == 0)

    model = LedgerModel({p: int(d["points"]) for p, d in KNOWN_PRODUCTS.items()}, mix.mapped)
    for delivery in accepted:
        model.add(delivery)
    expected = model.wallets()
    uids = set(expected) | {f"u_{run_id}_{k}" for k in range(mix.users)} | set(mix.mapped.values())
    actual = _firestore_wallets(drills, uids)
    wrong = sorted(u for u in uids if actual.get(u, 0) != expected.get(u, 0))
    result.add("wallets: model == Firestore", f"{len(uids) - len(wrong)}/{len(uids)}", "all", not wrong)

    letters = {e: verdict for e, verdict in dlq_tools.unresolved(drills.db).items() if run_id in e}
    unmapped = model.unmapped()
    transient = sorted(e for e, verdict in letters.items() if unmapped.get(e) != verdict)
    result.add("dead letters of this run", len(letters))
    result.add("dead letters the model does not expect (transient faults, write_failed)", len(transient), "0",
               not transient)
    absent = sorted(e for e in unmapped if e not in letters)
    result.add("unmapped events the model expects in the DLQ, absent", len(absent), "0", not absent)

    # The structural audit (wallets == sum of entries, keys credited once, claims, aggregates), every check judged.
    for check in audit.run(drills.db).checks:
        result.add(f"audit: {check.name}", check.value, check.detail, check.ok)
    result.add("seconds waited for the backlog", f"{waited:.1f}")
