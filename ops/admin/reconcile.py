"""Reconcile the ledger with PayNow: every delivery PayNow recorded is in webhookEvents, the DLQ, or recovered.

PayNow's push path loses a payment when its retries end before we answer 2xx (both regions down, a wrong secret, a
bug answering 4xx). Its Management API keeps each webhook subscription's delivery history with the full payload, so
this pages through that history (and the store's completed orders) for a window, compares it with `webhookEvents`,
the order aggregates and the dead-letter record (every unresolved dead letter, however old, is reported as not in the
ledger), and re-publishes what the ledger never saw through the ingress's own mapping and
publish path (`envelope_from_payload` -> `encode_envelope`, `envelope_attributes`, `ordering_key`) with the extra
attribute `source: reconcile`. The pipeline's create-precondition on `webhookEvents/{eventId}` makes a recovery that
races a late PayNow retry (or a second reconciler) commit once; re-running after the pipeline caught up recovers 0.

Runs as `paynow reconcile` and as `python -m ops.admin.reconcile` (the Cloud Run job, `deploy/reconcile.tf`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from ops.admin.dlq import PubSubPublish
from ops.admin.paynow_api import DEFAULT_BASE_URL, KEY_SETTING, ApiError, ManagementApi, check_base_url, parse_time
from schemas import PayloadError, encode_envelope, envelope_attributes, envelope_from_payload, ordering_key
from schemas.attributes import RECONCILE_SOURCE
from schemas.attributes import SOURCE as SOURCE_ATTRIBUTE
from schemas.paynow import SUBSCRIPTION_CREDITS

SOURCE = RECONCILE_SOURCE
"""Attribute (and webhookEvents field) marking a message the reconciler published, not the ingress."""
ORDER_COMPLETED = "ON_ORDER_COMPLETED"
COMPLETED_STATUSES = ("completed", "refunded", "chargeback")
"""Order statuses that mean PayNow completed the payment (a refunded order was completed first)."""
STATE_RANK = {"success": 0, "pending": 1, "failed": 2}
DEFAULT_MIN_AGE_S = 120.0
RECOVERED_LOG = "reconcile recovered event"
"""The log line a log-based metric counts (deploy/reconcile.tf: reconcile_recovered_events)."""
SHOW = 50

CREDITING = frozenset({ORDER_COMPLETED}) | SUBSCRIPTION_CREDITS
"""Types whose delivery credits points: recovered only when PayNow's orders / subscriptions endpoint confirms it."""

# the categories of the table, in the order shown
SEEN, RECOVERED_BEFORE, MISSING, DLQ, IN_FLIGHT, UNMAPPABLE, NO_DELIVERY, OLDER_DLQ, UNCONFIRMED = (
    "seen by both", "seen by both (recovered earlier)", "missing from the ledger",
    "not in the ledger: open dead letter", "in flight (younger than --min-age)", "payload the ingress would refuse",
    "completed orders with no delivery", "not in the ledger: open dead letter before the window",
    "credit not confirmed by PayNow (not published)")


# -- what the ledger side offers ---------------------------------------------------------------------------------
class LedgerView(Protocol):
    """Read-only access to what the pipeline wrote: webhookEvents, order aggregates, unresolved dead letters."""

    def event_docs(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def order_docs(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def dead_letters(self) -> dict[str, str]:
        """eventId -> verdict of every unresolved dead letter, however old (the record keeps them until resolved)."""
        ...


class Publish(Protocol):
    def __call__(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str: ...


class FirestoreLedger:
    """The ledger and the dead-letter record in Firestore (emulator when FIRESTORE_EMULATOR_HOST is set)."""

    BATCH = 300

    def __init__(self, db: Any) -> None:
        self.db = db

    def _docs(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        unique = sorted(set(ids))
        for i in range(0, len(unique), self.BATCH):
            refs = [self.db.collection(collection).document(x) for x in unique[i:i + self.BATCH]]
            out.update({s.id: s.to_dict() or {} for s in self.db.get_all(refs) if s.exists})
        return out

    def event_docs(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._docs("webhookEvents", event_ids)

    def order_docs(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._docs("orders", order_ids)

    def dead_letters(self) -> dict[str, str]:
        from ops.admin import dlq

        return dlq.unresolved(self.db)


# -- the comparison ----------------------------------------------------------------------------------------------
@dataclass
class Delivery:
    """One PayNow event as its delivery history shows it (merged over every queued copy of the same event_id)."""

    event_id: str
    event_type: str
    webhook_id: str
    queued_id: str
    created_ms: int
    state: str
    last_status: int | None
    executions: int
    next_retry: str | None
    payload: Any
    order_id: str | None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Delivery:
        payload = item.get("payload")
        body = payload.get("body") if isinstance(payload, dict) else None
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        event_type = payload.get("event_type") if isinstance(payload, dict) else None
        executions = list(item.get("executions") or [])
        last = max(executions, key=lambda e: (parse_time(e.get("started_at")), str(e.get("id"))), default=None)
        order_id = None
        if isinstance(body, dict):
            order_id = body.get("id") if event_type == ORDER_COMPLETED else body.get("order_id")
        return cls(event_id=str(event_id or item["id"]), event_type=str(event_type or item.get("event", "?")),
                   webhook_id=str(item.get("webhook_id", "")), queued_id=str(item["id"]),
                   created_ms=parse_time(item.get("created_at")), state=str(item.get("state", "?")),
                   last_status=int(last["status_code"]) if last is not None else None,
                   executions=len(executions), next_retry=item.get("next_retry"), payload=payload,
                   order_id=str(order_id) if isinstance(order_id, str) else None)

    def merge(self, other: Delivery) -> Delivery:
        """The same event queued twice (a resend): the best state wins, the latest execution gives the status."""
        best = self if STATE_RANK.get(self.state, 9) <= STATE_RANK.get(other.state, 9) else other
        latest = self if self.created_ms >= other.created_ms else other
        best.executions = self.executions + other.executions
        best.last_status = latest.last_status if latest.last_status is not None else best.last_status
        best.created_ms = min(self.created_ms, other.created_ms)
        return best


@dataclass
class Row:
    delivery: Delivery
    category: str
    ledger_status: str = ""
    verdict: str = ""
    recovered: bool = False
    error: str = ""


@dataclass
class Report:
    since_ms: int
    dry_run: bool
    rows: list[Row] = field(default_factory=list)
    orphan_orders: list[dict[str, Any]] = field(default_factory=list)
    older_dead_letters: dict[str, str] = field(default_factory=dict)
    """eventId -> verdict of unresolved dead letters whose delivery is not in the window (not in the ledger)."""
    orders_checked: int = 0
    api_requests: int = 0
    api_waited_s: float = 0.0

    def count(self, category: str) -> int:
        if category == NO_DELIVERY:
            return len(self.orphan_orders)
        if category == OLDER_DLQ:
            return len(self.older_dead_letters)
        return sum(1 for r in self.rows if r.category == category)

    @property
    def recovered(self) -> list[Row]:
        return [r for r in self.rows if r.recovered]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.error]

    @property
    def ok(self) -> bool:
        """Nothing left missing (recovered or in flight), nothing failed to publish, no unconfirmed credit."""
        unrecovered = [r for r in self.rows if r.category in (MISSING, UNCONFIRMED) and not r.recovered]
        return not unrecovered and not self.failed and not self.orphan_orders

    def summary(self) -> dict[str, int]:
        counts = {c: self.count(c) for c in (SEEN, RECOVERED_BEFORE, MISSING, DLQ, OLDER_DLQ, IN_FLIGHT,
                                             UNMAPPABLE, UNCONFIRMED, NO_DELIVERY)}
        counts["recovered now" if not self.dry_run else "would recover"] = sum(
            1 for r in self.rows if r.category == MISSING and (r.recovered or self.dry_run) and not r.error)
        return counts

    def table(self, title: str = "Reconciliation with PayNow") -> Table:
        out = Table(title=title, title_justify="left", header_style="bold")
        out.add_column("PayNow delivery / order")
        out.add_column("count", justify="right")
        for name, n in self.summary().items():
            style = "" if n == 0 or name in (SEEN, RECOVERED_BEFORE, IN_FLIGHT) else "bold yellow"
            out.add_row(name, f"[{style}]{n}[/]" if style else str(n))
        return out

    def details(self, show: int = SHOW) -> Table:
        out = Table(title="Not seen by the ledger", title_justify="left", header_style="bold")
        for column in ("eventId", "type", "orderId", "PayNow state", "last status", "attempts", "ledger",
                       "action"):
            out.add_column(column, overflow="fold")
        interesting = [r for r in self.rows if r.category not in (SEEN, RECOVERED_BEFORE)]
        for r in interesting[:show]:
            d = r.delivery
            action = ("recovered" if r.recovered else f"[red]failed: {r.error}[/]" if r.error
                      else "would recover" if r.category == MISSING and self.dry_run
                      else "[red]not published[/]: check it in PayNow" if r.category == UNCONFIRMED else "-")
            ledger = f"DLQ {r.verdict}" if r.verdict else r.ledger_status or r.category
            out.add_row(d.event_id, d.event_type, d.order_id or "", d.state,
                        "none" if d.last_status is None else str(d.last_status) if d.last_status else "no answer",
                        str(d.executions), ledger, action)
        left = max(show - len(interesting), 0)
        for event_id, verdict in list(self.older_dead_letters.items())[:left]:
            out.add_row(event_id, "?", "", "-", "-", "-", f"DLQ {verdict}", "paynow dlq show / replay")
        for order in self.orphan_orders[:max(left - len(self.older_dead_letters), 0)]:
            out.add_row("(no delivery)", "order " + str(order.get("status")), str(order.get("id")), "-", "-", "0",
                        "not purchased", "PayNow holds no payload: resend from PayNow or credit by hand")
        return out


def deliveries_in(api: ManagementApi, store_id: str, webhook_ids: Iterable[str], since_ms: int,
                  progress: Callable[[str], None]) -> dict[str, Delivery]:
    """eventId -> its delivery, over every subscription's history in the window."""
    found: dict[str, Delivery] = {}
    for webhook_id in webhook_ids:
        n = 0
        for item in api.history(store_id, webhook_id, since_ms=since_ms):
            delivery = Delivery.from_item(item)
            previous = found.get(delivery.event_id)
            found[delivery.event_id] = previous.merge(delivery) if previous else delivery
            n += 1
            if n % 500 == 0:
                progress(f"webhook {webhook_id}: {n} deliveries read")
        progress(f"webhook {webhook_id}: {n} deliveries in the window")
    return found


def _customer_id(value: Any) -> str | None:
    customer = value.get("customer") if isinstance(value, dict) else None
    found = customer.get("id") if isinstance(customer, dict) else None
    return str(found) if found is not None else None


def _lines(value: Any) -> Counter[tuple[str, int]]:
    """(product id, quantity) of every line, as a multiset."""
    lines = value.get("lines") if isinstance(value, dict) else None
    out: Counter[tuple[str, int]] = Counter()
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, dict):
            quantity = line.get("quantity", 1)
            out[(str(line.get("product_id")), int(quantity) if isinstance(quantity, int) else -1)] += 1
    return out


def unconfirmed(api: ManagementApi, store_id: str, delivery: Delivery,
                orders: Mapping[str, dict[str, Any]]) -> str | None:
    """Why PayNow does not confirm this crediting delivery, or None when it does: an ON_ORDER_COMPLETED needs the
    order (same id) completed (or refunded / charged back since), with the same customer and the same lines; a
    subscription credit needs the subscription (same id) with the same customer and product, at that billing cycle
    or later. The delivery history alone is never enough to credit anyone."""
    payload = delivery.payload if isinstance(delivery.payload, dict) else {}
    found = payload.get("body")
    body: dict[str, Any] = found if isinstance(found, dict) else {}
    customer = _customer_id(body)
    if delivery.event_type == ORDER_COMPLETED:
        order_id = body.get("id")
        if not isinstance(order_id, str):
            return "the delivery names no order"
        order = orders.get(order_id) or api.order(store_id, order_id)
        if order is None:
            return f"PayNow's orders endpoint has no order {order_id}"
        if order.get("status") not in COMPLETED_STATUSES:
            return f"order {order_id} is {order.get('status')!r}, not completed"
        paid_by = str(order.get("customer_id") or _customer_id(order))
        if paid_by != customer:
            return f"order {order_id} belongs to customer {paid_by}, the delivery names {customer}"
        if _lines(order) != _lines(body):
            return f"order {order_id}'s lines differ from the delivery's (product, quantity)"
        return None
    subscription_id = body.get("id")
    if not isinstance(subscription_id, str):
        return "the delivery names no subscription"
    subscription = api.subscription(store_id, subscription_id)
    if subscription is None:
        return f"PayNow's subscriptions endpoint has no subscription {subscription_id}"
    if _customer_id(subscription) != customer:
        return f"subscription {subscription_id} belongs to customer {_customer_id(subscription)}, the delivery " \
               f"names {customer}"
    if str(subscription.get("product_id")) != str(body.get("product_id")):
        return f"subscription {subscription_id} is for product {subscription.get('product_id')}, the delivery " \
               f"names {body.get('product_id')}"
    reached, cycle = subscription.get("billing_cycle_sequence"), body.get("billing_cycle_sequence")
    if not isinstance(reached, int) or not isinstance(cycle, int) or cycle > reached:
        return f"subscription {subscription_id} is at billing cycle {reached}, the delivery credits cycle {cycle}"
    return None


def recover(delivery: Delivery, publish: Publish, region: str) -> str:
    """Publish one delivery exactly as the ingress would have (plus `source: reconcile`); its message id."""
    raw = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    envelope = envelope_from_payload(raw, timestamp_ms=delivery.created_ms or int(time.time() * 1000),
                                     region=region)
    attributes = {**envelope_attributes(envelope), SOURCE_ATTRIBUTE: SOURCE}
    return publish(encode_envelope(envelope), attributes, ordering_key(envelope))


def reconcile(api: ManagementApi, ledger: LedgerView, *, store_id: str, since_ms: int,
              webhook_ids: Sequence[str] | None = None, publish: Publish | None = None, dry_run: bool = False,
              region: str = "us-central1", min_age_s: float = DEFAULT_MIN_AGE_S, now_ms: int | None = None,
              progress: Callable[[str], None] | None = None,
              on_recovered: Callable[[Row], None] | None = None) -> Report:
    """Compare PayNow's window with the ledger and (unless `dry_run`) recover what is missing; see the module doc."""
    say = progress or (lambda _msg: None)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    if not dry_run and publish is None:
        raise ValueError("a publisher is needed unless dry_run")
    if webhook_ids is None:  # the list PayNow returns holds each subscription's secret: ManagementApi drops it
        webhook_ids = [str(w["id"]) for w in api.webhooks(store_id) if w.get("type", "json_v1") == "json_v1"]
        say(f"store {store_id}: {len(webhook_ids)} JSON webhook subscription(s)")
    # orders first: PayNow queues an order's webhook when it completes it, so every order listed now has its delivery
    # in the history read next (read the other way round, an order completed in between would look undelivered)
    completed = list(api.orders(store_id, since_ms=since_ms, statuses=COMPLETED_STATUSES))
    orders_by_id = {str(o.get("id")): o for o in completed}
    found = deliveries_in(api, store_id, webhook_ids, since_ms, say)
    say(f"{len(found)} PayNow events in the window; reading webhookEvents, order aggregates and the DLQ")
    events = ledger.event_docs(list(found))
    dead = ledger.dead_letters()
    report = Report(since_ms=since_ms, dry_run=dry_run)
    for event_id, d in sorted(found.items(), key=lambda kv: (kv[1].created_ms, kv[0])):
        doc = events.get(event_id)
        if doc is not None:
            before = doc.get(SOURCE_ATTRIBUTE) == SOURCE
            report.rows.append(Row(d, RECOVERED_BEFORE if before else SEEN, ledger_status=str(doc.get("status", ""))))
        elif event_id in dead:
            report.rows.append(Row(d, DLQ, verdict=dead[event_id]))
        elif d.state != "failed" and now_ms - d.created_ms < min_age_s * 1000:
            report.rows.append(Row(d, IN_FLIGHT))
        else:
            report.rows.append(Row(d, MISSING))

    report.older_dead_letters = {e: v for e, v in sorted(dead.items()) if e not in found}

    order_ids_delivered = {d.order_id for d in found.values() if d.event_type == ORDER_COMPLETED and d.order_id}
    report.orders_checked = len(completed)
    settled_ms = now_ms - min_age_s * 1000
    undelivered = [o for o in completed if str(o.get("id")) not in order_ids_delivered
                   and parse_time(o.get("completed_at") or o.get("created_at")) < settled_ms]
    aggregates = ledger.order_docs([str(o["id"]) for o in undelivered]) if undelivered else {}
    report.orphan_orders = [o for o in undelivered if not aggregates.get(str(o["id"]), {}).get("purchased")]
    say(f"{len(completed)} completed orders in the window, {len(report.orphan_orders)} without any delivery")

    for row in report.rows:
        if row.category != MISSING:
            continue
        try:
            envelope_from_payload(json.dumps(row.delivery.payload).encode(), timestamp_ms=0, region=region)
        except PayloadError as exc:
            row.category, row.error = UNMAPPABLE, ""
            row.ledger_status = f"{exc.field}: {exc.problem}"
            continue
        if row.delivery.event_type in CREDITING:
            try:
                why = unconfirmed(api, store_id, row.delivery, orders_by_id)
            except ApiError as exc:
                why = f"PayNow could not be asked ({exc})"[:200]
            if why is not None:
                row.category, row.ledger_status = UNCONFIRMED, why
                say(f"not recovering {row.delivery.event_id} ({row.delivery.event_type}): {why}")
                continue
        if dry_run:
            continue
        assert publish is not None
        try:
            recover(row.delivery, publish, region)
        except Exception as exc:  # one failed publish must not hide the others; reported and exit status 1
            row.error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            row.recovered = True
            if on_recovered is not None:
                on_recovered(row)
    report.api_requests, report.api_waited_s = api.requests, api.waited
    return report


# -- command line ------------------------------------------------------------------------------------------------
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `6h`, `2d` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 6h or 2d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _human(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_duration, required=True, metavar="DURATION",
                        help="window to reconcile, back from now: 30m, 6h, 2d")
    parser.add_argument("--store", help="PayNow store id (default: $PAYNOW_STORE_ID, or the running stack's fake)")
    parser.add_argument("--webhook", action="append", default=None, metavar="ID",
                        help="webhook subscription id (repeatable; default: every JSON subscription of the store)")
    parser.add_argument("--dry-run", action="store_true", help="compare and print; publish nothing")
    parser.add_argument("--api-url", help=f"Management API base URL (default: $PAYNOW_API_URL, the running stack's "
                                          f"fake, or {DEFAULT_BASE_URL})")
    parser.add_argument("--project", help="project id (default: the running stack's, or $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--topic", help="topic to publish recoveries onto (default: the project's main topic)")
    parser.add_argument("--region", default=os.environ.get("REGION", "us-central1"),
                        help="region recorded on recovered envelopes (default: $REGION or %(default)s)")
    parser.add_argument("--min-age", type=float, default=DEFAULT_MIN_AGE_S, metavar="SECONDS",
                        help="deliveries younger than this that PayNow has not given up on are in flight, not "
                             "missing (default %(default)s)")
    parser.add_argument("--show", type=int, default=SHOW, help="rows of detail to print (default %(default)s)")
    parser.add_argument("--json-log", action="store_true",
                        help="one JSON log line per recovered event and a summary (Cloud Logging's shape)")


@dataclass
class Settings:
    api_key: str
    api_url: str
    store_id: str
    project: str


def settings_from(args: argparse.Namespace, stack_info: Mapping[str, Any] | None) -> Settings:
    """Flags, then environment, then the running local stack's fake PayNow; errors name the setting."""
    fake = (stack_info or {}).get("paynowApi") or {}
    api_key = os.environ.get(KEY_SETTING) or fake.get("apiKey") or ""
    if not api_key:
        raise ApiError(f"no PayNow API key: set {KEY_SETTING} (a store API key from the PayNow dashboard)")
    store = args.store or os.environ.get("PAYNOW_STORE_ID") or fake.get("storeId")
    if not store:
        raise ApiError("no store: give --store or set PAYNOW_STORE_ID")
    project = args.project or (stack_info or {}).get("project") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise ApiError("no project: give --project or set GOOGLE_CLOUD_PROJECT")
    url = args.api_url or os.environ.get("PAYNOW_API_URL") or fake.get("url") or DEFAULT_BASE_URL
    return Settings(api_key, check_base_url(url), store, project)


def _log(severity: str, message: str, **fields: Any) -> None:
    print(json.dumps({"severity": severity, "message": message, **fields}, separators=(",", ":")), flush=True)


def run_command(args: argparse.Namespace, console: Console, stack_info: Mapping[str, Any] | None = None) -> int:
    """`paynow reconcile` / the Cloud Run job: 0 when nothing is left missing, 1 otherwise."""
    from google.cloud import firestore

    from ops.local.topology import Topology

    settings = settings_from(args, stack_info)
    topology = Topology(project=settings.project)
    since_ms = int((time.time() - args.since) * 1000)

    def say(message: str) -> None:
        if args.json_log:
            _log("INFO", message)
        else:
            console.print(f"[dim]{message}[/]", highlight=False)

    def recovered(row: Row) -> None:
        if args.json_log:
            d = row.delivery
            _log("WARNING", RECOVERED_LOG, region=args.region, eventId=d.event_id, eventType=d.event_type,
                 orderId=d.order_id, paynowState=d.state, lastStatus=d.last_status, attempts=d.executions,
                 webhookId=d.webhook_id)

    api = ManagementApi(settings.api_key, base_url=settings.api_url, on_wait=say)
    db = firestore.Client(project=settings.project)
    publish = None if args.dry_run else PubSubPublish(args.topic or topology.topic)
    try:
        report = reconcile(api, FirestoreLedger(db),
                           store_id=settings.store_id, since_ms=since_ms, webhook_ids=args.webhook,
                           publish=publish, dry_run=args.dry_run, region=args.region, min_age_s=args.min_age,
                           progress=say, on_recovered=recovered)
    finally:
        api.close()
        db.close()
    if args.json_log:
        _log("WARNING" if report.recovered or not report.ok else "INFO", "reconcile finished",
             recovered=len(report.recovered), summary=report.summary(), apiRequests=report.api_requests,
             orphanOrders=[o.get("id") for o in report.orphan_orders][:50], dryRun=args.dry_run)
    else:
        mode = "dry run" if args.dry_run else "recovering"
        console.print(report.table(f"Reconciliation with PayNow · store {settings.store_id} · last "
                                   f"{_human(args.since)} · {mode}"))
        if any(r.category not in (SEEN, RECOVERED_BEFORE) for r in report.rows) or report.orphan_orders:
            console.print(report.details(args.show))
        console.print(f"{report.api_requests} Management API requests, {report.api_waited_s:.1f} s waited on "
                      f"rate limits and errors; {report.orders_checked} completed orders checked")
        for row in report.failed:
            console.print(f"[red]publish failed[/] {row.delivery.event_id}: {row.error}")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reconcile", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args, Console(width=160))
    except ApiError as exc:
        _log("ERROR", f"reconcile failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
