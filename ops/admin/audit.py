"""The ledger auditor: wallet == sum(ledger), every key once database-wide, order aggregates consistent with their
entries, every young entry has its event, and (with traffic logs) wallets and keys equal the independent model's.

Works against any Firestore (the emulator when FIRESTORE_EMULATOR_HOST is set, else the real one by ADC).
DLQ evidence comes from the durable dead-letter record (`deadLetters`, unresolved ones: what operators would
replay), which outlives the DLQ subscription's 7 days. The expected state
comes from ops/load/ledger_model.py fed with the deliveries the traffic logs say were accepted, never from the
pipeline's code.
"""
from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore
from rich.table import Table

from ops.admin.erase import ERASED
from ops.load.ledger_model import LedgerModel
from ops.load.traffic_log import Context, context_of, delivery_of

SHARE_TOLERANCE = 0.02  # regional shares may differ by 2 percentage points (events re-sent to the other region)
SHOW = 5  # examples printed per failing check
EVENTS_TTL_DAYS = 30.0  # webhookEvents expire (Firestore TTL on expiresAt); older entries have no event to point at
ORDER_KINDS = ("purchase", "reversal", "reinstatement", "reinstatement-void")
SIGN = {"purchase": 1, "reversal": -1, "reinstatement": 1, "reinstatement-void": -1}

WALLETS = "users: paidBalance == sum(ledger.amount)"
KEY_TWICE = "keys credited under two users"
UNCLAIMED = "ledger entries without a matching claim (ledgerKeys, or for an order's key its aggregate)"
UNUSED_CLAIMS = "ledgerKeys claims without their ledger entry"
TWO_EVENTS = "keys listed by two webhookEvents"
ORPHANS = "ledger entries younger than the events TTL without their webhookEvents doc"
DANGLING = "webhookEvents entryIds missing from the ledger"
AGGREGATES = "order aggregates consistent with their entries"
LOST = "accepted events neither processed nor in the DLQ (lost)"
VERDICTS = "events with an unexpected outcome (DLQ verdict)"
MODEL_WALLETS = "wallets equal the independent model's"
MODEL_PRESENT = "expected ledger keys (model) present"
MODEL_EXTRA = "ledger keys nobody paid for (not in the model)"
MODEL_AMOUNTS = "keys with a wrong user or amount"


@dataclass
class Check:
    name: str
    value: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, value: Any, ok: bool, examples: Iterable[Any] = ()) -> None:
        shown = list(examples)[:SHOW]
        self.checks.append(Check(name, str(value), ok, ", ".join(map(str, shown)) if not ok else ""))

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def failing(self) -> set[str]:
        return {c.name for c in self.checks if not c.ok}

    def table(self, title: str = "Ledger audit") -> Table:
        out = Table(title=title, title_justify="left", header_style="bold")
        out.add_column("check")
        out.add_column("value", justify="right")
        out.add_column("result")
        out.add_column("examples of drift", overflow="fold", max_width=60)
        for c in self.checks:
            out.add_row(c.name, c.value, "[green]pass[/]" if c.ok else "[bold red]DRIFT[/]", c.detail)
        return out


@dataclass
class Snapshot:
    """What the auditor reads from Firestore."""

    wallets: dict[str, int]  # uid -> paidBalance
    ledger: dict[tuple[str, str], dict[str, Any]]  # (uid, key) -> entry
    events: dict[str, dict[str, Any]]  # eventId -> webhookEvents doc
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> ledgerKeys doc {uid, eventId, amount}
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # orderId -> orders doc

    @classmethod
    def read(cls, db: firestore.Client) -> Snapshot:
        wallets = {}
        for doc in db.collection_group("wallet").stream():
            if doc.id == "points" and doc.reference.parent.parent is not None:
                wallets[doc.reference.parent.parent.id] = int((doc.to_dict() or {}).get("paidBalance", 0))
        ledger = {}
        for doc in db.collection_group("ledger").stream():
            if doc.reference.parent.parent is not None:
                ledger[(doc.reference.parent.parent.id, doc.id)] = doc.to_dict() or {}
        events = {doc.id: doc.to_dict() or {} for doc in db.collection("webhookEvents").stream()}
        claims = {doc.id: doc.to_dict() or {} for doc in db.collection("ledgerKeys").stream()}
        orders = {doc.id: doc.to_dict() or {} for doc in db.collection("orders").stream()}
        return cls(wallets, ledger, events, claims, orders)


def _millis(value: Any) -> int | None:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def order_key(key: str) -> tuple[str, str] | None:
    """(kind, orderId) of an order's ledger key (`purchase:{orderId}`, ...); None for a subscription's key."""
    kind, sep, order_id = key.partition(":")
    return (kind, order_id) if sep and kind in ORDER_KINDS and order_id else None


def audit(snapshot: Snapshot, *, traffic: list[dict[str, Any]] | None = None, dlq: dict[str, str] | None = None,
          context: Context | None = None, events_ttl_days: float = EVENTS_TTL_DAYS,
          now_ms: int | None = None) -> Report:
    """Audit a snapshot; with the traffic records and the DLQ's {eventId: verdict}, also judge every accepted event
    and the wallets against the independent model. `context` (catalog, mappings, run ids) defaults to the one the
    records' run headers carry."""
    report = Report()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    _audit_wallets(report, snapshot)
    _audit_keys(report, snapshot, now_ms - int(events_ttl_days * 86_400_000))
    _audit_orders(report, snapshot)
    if traffic is not None:
        _audit_traffic(report, snapshot, traffic, dlq or {}, context or context_of(traffic))
    return report


def _audit_wallets(report: Report, snapshot: Snapshot) -> None:
    sums: dict[str, int] = defaultdict(int)
    for (uid, _), entry in snapshot.ledger.items():
        sums[uid] += int(entry.get("amount", 0))
    users = set(sums) | set(snapshot.wallets)
    drifting = sorted(u for u in users if snapshot.wallets.get(u, 0) != sums.get(u, 0))
    report.add(WALLETS, f"{len(users) - len(drifting)}/{len(users)}", not drifting,
               (f"{u}: wallet {snapshot.wallets.get(u, 0)} ≠ ledger {sums.get(u, 0)}" for u in drifting))


def _audit_keys(report: Report, snapshot: Snapshot, young_after_ms: int) -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for uid, key in snapshot.ledger:
        owners[key].append(uid)
    twice = sorted((k, sorted(u)) for k, u in owners.items() if len(u) > 1)
    report.add(KEY_TWICE, len(twice), not twice, (f"{k}: {u}" for k, u in twice))

    unclaimed = []
    for (uid, key), entry in sorted(snapshot.ledger.items()):
        claim = snapshot.claims.get(key)
        if claim is None and _claimed_by_aggregate(snapshot, uid, key):
            continue  # an order's keys are claimed by its aggregate (pipeline.commit_plan.commit_writes)
        if claim is None:
            unclaimed.append(f"{uid}/{key}: no claim")
        elif claim.get("uid") != uid or int(claim.get("amount", 0)) != int(entry.get("amount", 0)) \
                or claim.get("eventId") != entry.get("eventId"):
            unclaimed.append(f"{uid}/{key}: claim {claim.get('uid')}/{claim.get('amount')}/{claim.get('eventId')}")
    report.add(UNCLAIMED, len(unclaimed), not unclaimed, unclaimed)
    unused = sorted(k for k, c in snapshot.claims.items()
                    if c.get("uid") != ERASED and (str(c.get("uid")), k) not in snapshot.ledger)
    report.add(UNUSED_CLAIMS, len(unused), not unused, unused)

    listed: dict[str, list[str]] = defaultdict(list)
    for event_id, event in snapshot.events.items():
        if event.get("uid") == ERASED:
            continue  # an erased person's: their entries are gone, the event still deduplicates
        for key in event.get("entryIds") or ():
            listed[key].append(event_id)
    by_two = sorted((k, sorted(v)) for k, v in listed.items() if len(v) > 1)
    report.add(TWO_EVENTS, len(by_two), not by_two, (f"{k}: {ids}" for k, ids in by_two))

    young = old = 0
    orphans = []
    for (uid, key), entry in sorted(snapshot.ledger.items()):
        created = _millis(entry.get("createdAt"))
        if created is not None and created < young_after_ms:
            old += 1  # its webhookEvents doc may have expired: nothing to check it against
            continue
        young += 1
        found = snapshot.events.get(str(entry.get("eventId")))
        if found is None or key not in (found.get("entryIds") or ()):
            orphans.append(f"{uid}/{key} (event {entry.get('eventId')})")
    report.add(ORPHANS, f"{len(orphans)} of {young} ({old} older, not checked)", not orphans, orphans)
    dangling = sorted(f"{e}: {k}" for k, ids in listed.items() if k not in owners for e in ids)
    report.add(DANGLING, len(dangling), not dangling, dangling)


def _claimed_by_aggregate(snapshot: Snapshot, uid: str, key: str) -> bool:
    """Whether `key` is an order's key that its `orders/{orderId}` aggregate lists, for the same user."""
    parsed = order_key(key)
    agg = snapshot.orders.get(parsed[1]) if parsed else None
    return agg is not None and key in (agg.get("entries") or ()) and agg.get("uid") == uid


def _audit_orders(report: Report, snapshot: Snapshot) -> None:
    """Each orders/{orderId} against the entries of that order found in the ledger (database-wide)."""
    found: dict[str, dict[str, tuple[str, int]]] = defaultdict(dict)  # orderId -> kind -> (uid, amount)
    for (uid, key), entry in snapshot.ledger.items():
        parsed = order_key(key)
        if parsed is not None:
            found[parsed[1]][parsed[0]] = (uid, int(entry.get("amount", 0)))
    wrong = []
    for order_id in sorted(set(found) | set(snapshot.orders)):
        if (snapshot.orders.get(order_id) or {}).get("uid") == ERASED:
            continue  # an erased person's order: the aggregate still decides its refunds, its entries are gone
        problem = _order_problem(snapshot.orders.get(order_id), found.get(order_id, {}), order_id)
        if problem:
            wrong.append(f"{order_id}: {problem}")
    report.add(AGGREGATES, f"{len(wrong)} inconsistent of {len(snapshot.orders)}", not wrong, wrong)


def _order_problem(agg: dict[str, Any] | None, entries: dict[str, tuple[str, int]], order_id: str) -> str | None:
    if agg is None:
        return f"entries {sorted(entries)} but no aggregate"
    listed = set(agg.get("entries") or ())
    keys = {f"{kind}:{order_id}" for kind in entries}
    if listed != keys:
        return f"aggregate lists {sorted(listed)}, ledger has {sorted(keys)}"
    amount = agg.get("amount")
    purchased, cause, won, refunded = (bool(agg.get(f)) for f in ("purchased", "reversalCause", "won", "refunded"))
    for kind, (uid, value) in entries.items():
        if uid != agg.get("uid"):
            return f"{kind} credited to {uid}, aggregate uid {agg.get('uid')}"
        if amount is None or value != SIGN[kind] * int(amount):
            return f"{kind} amount {value}, aggregate amount {amount}"
    if purchased and amount is None:
        return "purchased without an amount"
    a = int(amount or 0)
    due = {"purchase": purchased and a > 0, "reversal": purchased and cause and a > 0}
    for kind, should in due.items():
        if should != (kind in entries):
            return f"{kind} {'missing' if should else 'not due'} (purchased={purchased}, reversalCause={cause})"
    if "reinstatement" in entries and not (won and cause and purchased):
        return "reinstatement without a won closing"
    if "reinstatement-void" in entries and not ("reinstatement" in entries and refunded):
        return "reinstatement-void without a reinstatement and a completed refund"
    net = sum(value for _, value in entries.values())
    expected = a * purchased - a * (purchased and cause) + a * (purchased and cause and won and not refunded)
    if net != expected:
        return f"net {net}, flags imply {expected}"
    return None


def accepted_events(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """eventId -> what the sender knows about it, for every webhook answered 2xx and every legacy publish.

    `regions` lists each region that answered 2xx (an exact duplicate may be answered by both); `verdict` is a
    transport verdict known without any ledger rule (a v1 message's drop_incompatible).
    """
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "recovered":  # PayNow gave up on these; the reconciler published them since
            for event_id in r.get("eventIds") or ():
                out.setdefault(event_id, {"kind": "webhook", "regions": [], "scenario": "recovered", "verdict": None})
            continue
        if not r.get("ok") or r.get("kind") not in ("webhook", "legacy"):
            continue
        event = out.setdefault(r["eventId"], {"kind": r["kind"], "regions": [], "scenario": r.get("scenario"),
                                              "verdict": r.get("verdict")})
        if r["kind"] == "webhook":
            event["regions"].append(r.get("region"))
    return out


def model_of(records: list[dict[str, Any]], context: Context) -> LedgerModel:
    """The independent model fed with every accepted delivery in log order (and mappings/replays as logged)."""
    model = LedgerModel(context.catalog, context.customers)
    sent: dict[str, dict[str, Any]] = {}
    for r in records:
        kind = r.get("kind")
        if kind in ("webhook", "legacy") and r.get("delivery"):
            sent.setdefault(r["eventId"], r)
            if r.get("ok"):
                model.add(delivery_of(r) or {})
        elif kind == "mapping":
            model.customers[str(r["customerId"])] = str(r["uid"])
        elif kind in ("replay", "recovered"):  # the pipeline sees these deliveries (again)
            for event_id in r.get("eventIds") or ():
                if event_id in sent:
                    model.add(delivery_of(sent[event_id]) or {})
    return model


def _in_scope(uid: str, run_ids: set[str]) -> bool:
    return any(part in run_ids for part in uid.split("_"))


def _audit_traffic(report: Report, snapshot: Snapshot, records: list[dict[str, Any]], dlq: dict[str, str],
                   context: Context) -> None:
    accepted = accepted_events(records)
    missing = sorted(e for e in accepted if e not in snapshot.events and e not in dlq)
    in_events = sum(1 for e in accepted if e in snapshot.events)
    in_dlq = sum(1 for e in accepted if e not in snapshot.events and e in dlq)
    report.add("accepted events (2xx or published)", len(accepted), True)
    report.add("  … with a webhookEvents doc / a DLQ record", f"{in_events} / {in_dlq}", True)
    report.add(LOST, len(missing), not missing, (f"{e} ({accepted[e]['scenario']})" for e in missing))

    model = model_of(records, context)
    verdicts = {e: a["verdict"] for e, a in accepted.items() if a["verdict"]} | model.unmapped()
    wrong = sorted(f"{e}: expected {verdicts.get(e) or 'processed'}, got {dlq.get(e) or 'processed'}"
                   for e in accepted if not _outcome_as_expected(e, verdicts.get(e), snapshot, dlq))
    report.add(VERDICTS, len(wrong), not wrong, wrong)

    want_wallets = model.wallets()
    want_keys = model.keys()
    uids = set(want_wallets) | {uid for uid, _ in want_keys.values()}
    uids |= {u for u in snapshot.wallets if _in_scope(u, context.run_ids)}
    uids |= {u for u, _ in snapshot.ledger if _in_scope(u, context.run_ids)}
    off = sorted(u for u in uids if snapshot.wallets.get(u, 0) != want_wallets.get(u, 0))
    report.add(MODEL_WALLETS, f"{len(uids) - len(off)}/{len(uids)}", not off,
               (f"{u}: wallet {snapshot.wallets.get(u, 0)}, model {want_wallets.get(u, 0)}" for u in off))

    actual = {key: (uid, int(e.get("amount", 0))) for (uid, key), e in snapshot.ledger.items() if uid in uids}
    for key in [k for k in actual if k.startswith("reinstatement-void:")]:
        # a reinstatement voided by a later refund nets to zero; the model, order-free, has neither
        pair = "reinstatement:" + key.split(":", 1)[1]
        if pair in actual and pair not in want_keys and actual[pair][1] + actual[key][1] == 0:
            del actual[pair], actual[key]
    absent = sorted(k for k in want_keys if k not in actual)
    extra = sorted(k for k in actual if k not in want_keys)
    amounts = sorted(k for k in want_keys if k in actual and actual[k] != want_keys[k])
    report.add(MODEL_PRESENT, f"{len(want_keys) - len(absent)}/{len(want_keys)}", not absent,
               (f"{want_keys[k][0]}/{k}" for k in absent))
    report.add(MODEL_EXTRA, len(extra), not extra, (f"{actual[k][0]}/{k}" for k in extra))
    report.add(MODEL_AMOUNTS, len(amounts), not amounts,
               (f"{k}: {actual[k][0]} {actual[k][1]} ≠ model {want_keys[k][0]} {want_keys[k][1]}" for k in amounts))
    _audit_regions(report, snapshot, accepted)


def _audit_regions(report: Report, snapshot: Snapshot, accepted: dict[str, dict[str, Any]]) -> None:
    acked: Counter[str] = Counter()
    recorded: Counter[str] = Counter()
    mismatched = []
    for event_id, event in accepted.items():
        if event["kind"] != "webhook" or event_id not in snapshot.events:
            continue
        regions = [r for r in event["regions"] if r]
        if not regions:
            continue
        acked[regions[0]] += 1
        region = snapshot.events[event_id].get("region")
        recorded[str(region)] += 1
        if region not in regions:
            mismatched.append(f"{event_id}: acked by {regions}, recorded {region}")
    total = sum(acked.values()) or 1
    shares = {r: (acked[r] / total, recorded[r] / total) for r in sorted(set(acked) | set(recorded))}
    off = [f"{r}: acked {a:.1%} recorded {b:.1%}" for r, (a, b) in shares.items() if abs(a - b) > SHARE_TOLERANCE]
    report.add("regional shares (acked vs recorded)",
               "  ".join(f"{r} {a:.1%}/{b:.1%}" for r, (a, b) in shares.items()) or "-", not off, off)
    report.add("events recorded in a region that did not ack them", len(mismatched), True)


def _outcome_as_expected(event_id: str, verdict: str | None, snapshot: Snapshot, dlq: dict[str, str]) -> bool:
    """An event meant for the DLQ is there with its verdict; any other is processed, not dead-lettered."""
    if verdict:
        return dlq.get(event_id) == verdict if event_id in dlq else event_id not in snapshot.events
    return event_id not in dlq or event_id in snapshot.events


def wait_accounted(db: firestore.Client, records: list[dict[str, Any]], timeout: float) -> tuple[int, float]:
    """Wait until every accepted event has a webhookEvents doc or a DLQ record: (still missing, seconds waited)."""
    from ops.admin import dlq as dlq_tools

    waiting = set(accepted_events(records))
    started = time.monotonic()
    while True:
        ids = sorted(waiting)
        for i in range(0, len(ids), 300):
            refs = [db.collection("webhookEvents").document(e) for e in ids[i:i + 300]]
            waiting -= {snap.id for snap in db.get_all(refs) if snap.exists}
        if waiting:
            waiting -= set(dlq_tools.unresolved(db))
        elapsed = time.monotonic() - started
        if not waiting or elapsed >= timeout:
            return len(waiting), elapsed
        time.sleep(0.5)


def run(db: firestore.Client, *, traffic: list[dict[str, Any]] | None = None, context: Context | None = None,
        events_ttl_days: float = EVENTS_TTL_DAYS) -> Report:
    """Read Firestore (and the unresolved dead letters when checking traffic records) and audit."""
    dlq: dict[str, str] = {}
    if traffic is not None:
        from ops.admin import dlq as dlq_tools

        dlq = dlq_tools.unresolved(db)
    return audit(Snapshot.read(db), traffic=traffic, dlq=dlq, context=context, events_ttl_days=events_ttl_days)
