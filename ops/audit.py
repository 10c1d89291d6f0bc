"""The ledger auditor: wallet == sum(ledger), no business key credited twice, and every accepted webhook accounted.

Works against any Firestore (the emulator when FIRESTORE_EMULATOR_HOST is set, else the real one by ADC).
DLQ evidence comes from the DLQ subscription itself: its messages are pulled without acking and released again
(`ops.dlq.peek`), so the audit reads what operators would replay and consumes nothing.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore
from rich.table import Table

SHARE_TOLERANCE = 0.02  # regional shares may differ by 2 percentage points (events re-sent to the other region)
SHOW = 5  # examples printed per failing check


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
    ledger: dict[tuple[str, str], dict[str, Any]]  # (uid, entryId) -> entry
    events: dict[str, dict[str, Any]]  # eventId -> webhookEvents doc

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
        return cls(wallets, ledger, events)


def accepted_events(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """eventId -> what the sender knows about it, for every webhook answered 2xx and every legacy publish.

    `regions` lists each region that answered 2xx (an exact duplicate may be answered by both);
    `expected` merges the ledger entries every accepted delivery of the event implies.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if not r.get("ok"):
            continue
        event = out.setdefault(r["eventId"], {"kind": r["kind"], "regions": [], "dlq": r.get("dlq"),
                                              "scenario": r.get("scenario"), "expected": {}})
        if r["kind"] == "webhook":
            event["regions"].append(r.get("region"))
        for uid, entries in (r.get("expected") or {}).items():
            event["expected"].setdefault(uid, {}).update(entries)
    return out


def audit(snapshot: Snapshot, *, traffic: list[dict[str, Any]] | None = None,
          dlq: dict[str, str] | None = None) -> Report:
    """Audit a snapshot; with the traffic log(s) and the DLQ's {eventId: verdict}, also check every accepted event."""
    report = Report()
    sums: dict[str, int] = defaultdict(int)
    for (uid, _), entry in snapshot.ledger.items():
        sums[uid] += int(entry.get("amount", 0))
    users = set(sums) | set(snapshot.wallets)
    drifting = sorted(u for u in users if snapshot.wallets.get(u, 0) != sums.get(u, 0))
    report.add("users: paidBalance == sum(ledger.amount)", f"{len(users) - len(drifting)}/{len(users)}",
               not drifting, (f"{u}: wallet {snapshot.wallets.get(u, 0)} ≠ ledger {sums.get(u, 0)}" for u in drifting))

    claimed: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event_id, event in snapshot.events.items():
        uid = event.get("uid")
        for entry_id in event.get("entryIds") or ():
            claimed[(str(uid), entry_id)].append(event_id)
    twice = sorted((k, v) for k, v in claimed.items() if len(v) > 1)
    report.add("business keys credited by two events", len(twice), not twice,
               (f"{uid}/{entry}: {ids}" for (uid, entry), ids in twice))
    orphans = sorted(k for k, e in snapshot.ledger.items()
                     if k not in claimed or e.get("eventId") not in claimed[k])
    report.add("ledger entries without their webhookEvents doc", len(orphans), not orphans,
               (f"{uid}/{entry}" for uid, entry in orphans))
    dangling = sorted(k for k in claimed if k not in snapshot.ledger)
    report.add("webhookEvents entryIds missing from the ledger", len(dangling), not dangling,
               (f"{uid}/{entry}" for uid, entry in dangling))
    if traffic is not None:
        _audit_traffic(report, snapshot, accepted_events(traffic), dlq or {})
    return report


def _audit_traffic(report: Report, snapshot: Snapshot, accepted: dict[str, dict[str, Any]],
                   dlq: dict[str, str]) -> None:
    missing = sorted(e for e in accepted if e not in snapshot.events and e not in dlq)
    in_events = sum(1 for e in accepted if e in snapshot.events)
    in_dlq = sum(1 for e in accepted if e not in snapshot.events and e in dlq)
    report.add("accepted events (2xx or published)", len(accepted), True)
    report.add("  … with a webhookEvents doc / a DLQ record", f"{in_events} / {in_dlq}", True)
    report.add("accepted events neither processed nor in the DLQ (lost)", len(missing), not missing,
               (f"{e} ({accepted[e]['scenario']})" for e in missing))
    wrong = sorted(f"{e}: expected {a['dlq'] or 'processed'}, got {dlq.get(e) or 'processed'}"
                   for e, a in accepted.items() if not _outcome_as_expected(e, a, snapshot, dlq))
    report.add("events with an unexpected outcome (DLQ verdict)", len(wrong), not wrong, wrong)

    expected: dict[tuple[str, str], int] = {}
    for event in accepted.values():
        for uid, entries in event["expected"].items():
            for entry_id, amount in entries.items():
                expected[(uid, entry_id)] = amount
    uids = {uid for uid, _ in expected}
    actual = {k: int(v.get("amount", 0)) for k, v in snapshot.ledger.items() if k[0] in uids}
    absent = sorted(k for k in expected if k not in actual)
    extra = sorted(k for k in actual if k not in expected)
    amounts = sorted(k for k in expected if k in actual and actual[k] != expected[k])
    report.add("expected ledger entries (business keys) present", f"{len(expected) - len(absent)}/{len(expected)}",
               not absent, (f"{u}/{e}" for u, e in absent))
    report.add("ledger entries nobody paid for", len(extra), not extra, (f"{u}/{e}" for u, e in extra))
    report.add("entries with a wrong amount", len(amounts), not amounts,
               (f"{u}/{e}: {actual[(u, e)]} ≠ {expected[(u, e)]}" for u, e in amounts))

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


def _outcome_as_expected(event_id: str, event: dict[str, Any], snapshot: Snapshot, dlq: dict[str, str]) -> bool:
    """An event meant for the DLQ is there with its verdict; any other is processed, not dead-lettered."""
    if event["dlq"]:
        return dlq.get(event_id) == event["dlq"] if event_id in dlq else event_id not in snapshot.events
    return event_id not in dlq or event_id in snapshot.events


def wait_accounted(db: firestore.Client, records: list[dict[str, Any]], dlq_subscription: str,
                   timeout: float) -> tuple[int, float]:
    """Wait until every accepted event has a webhookEvents doc or a DLQ record: (still missing, seconds waited)."""
    from ops import dlq as dlq_tools

    waiting = set(accepted_events(records))
    started = time.monotonic()
    while True:
        ids = sorted(waiting)
        for i in range(0, len(ids), 300):
            refs = [db.collection("webhookEvents").document(e) for e in ids[i:i + 300]]
            waiting -= {snap.id for snap in db.get_all(refs) if snap.exists}
        if waiting:
            waiting -= {x.event_id for x in dlq_tools.inspect(dlq_subscription)}
        elapsed = time.monotonic() - started
        if not waiting or elapsed >= timeout:
            return len(waiting), elapsed
        time.sleep(0.5)


def run(db: firestore.Client, *, traffic: list[dict[str, Any]] | None = None,
        dlq_subscription: str | None = None) -> Report:
    """Read Firestore (and the DLQ when checking a traffic log) and audit."""
    dlq: dict[str, str] = {}
    if traffic is not None and dlq_subscription:
        from ops import dlq as dlq_tools

        for letter in dlq_tools.inspect(dlq_subscription):
            if letter.event_id:
                dlq.setdefault(letter.event_id, letter.verdict)
    return audit(Snapshot.read(db), traffic=traffic, dlq=dlq)
