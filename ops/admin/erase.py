"""`paynow erase`: remove or pseudonymise everything tied to one person, in every store the project writes.

A person is a uid (`--uid`), a PayNow customer (`--customer`), or both; each brings the other through the
`paynowCustomers` mappings. What exactly-once needs stays, pseudonymised: a `ledgerKeys` claim keeps blocking a
re-credit of its key, an `orders` aggregate keeps deciding its refunds and chargebacks, a `webhookEvents` doc keeps
deduplicating its event; their uid becomes the tombstone `ERASED` (a reserved id no real user can have). What only
describes the person goes: the mappings, the wallet and the ledger entries. A dead letter keeps its record (event,
verdict, failure) with the ids tombstoned and is resolved by the erasure (its payment belongs to nobody now); its
Pub/Sub copy is acknowledged (removed from the DLQ subscription). Traffic logs are rewritten with the ids tombstoned.

Every change is printed; `--dry-run` prints what would change and changes nothing; a second run finds nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1  # the package has no py.typed: mypy resolves this form to Any
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from rich.console import Console
from rich.table import Table

from ops.admin import dlq
from schemas import DecodeError, decode_dlq_record, decode_envelope, encode_envelope
from schemas import dead_letters as dl
from schemas.paynow import ID_RE, UID_RE

ERASED = "__erased__"
"""The tombstone an erased uid or customer id becomes: reserved (`__…__`), so no real user or customer has it."""
USERS, MAPPINGS, CLAIMS, ORDERS, EVENTS = "users", "paynowCustomers", "ledgerKeys", "orders", "webhookEvents"
BATCH = 400  # Firestore allows 500 writes per batch
PULL_BATCH = 500


class EraseError(Exception):
    """The erasure could not read or change a store; the message names it (nothing after it was changed)."""


@dataclass(frozen=True)
class Person:
    uids: frozenset[str]
    customers: frozenset[str]

    def ids(self) -> frozenset[str]:
        return self.uids | self.customers

    def describe(self) -> str:
        parts = [f"uid {u}" for u in sorted(self.uids)] + [f"customer {c}" for c in sorted(self.customers)]
        return ", ".join(parts)


@dataclass
class Change:
    store: str
    target: str
    action: str


@dataclass
class Result:
    person: Person
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    def add(self, store: str, target: str, action: str) -> None:
        self.changes.append(Change(store, target, action))

    def table(self) -> Table:
        verb = "would change" if self.dry_run else "changed"
        out = Table(title=f"erase {self.person.describe()} · {len(self.changes)} {verb}", title_justify="left",
                    header_style="bold")
        for name in ("store", "what", "change"):
            out.add_column(name, overflow="fold")
        for c in self.changes:
            out.add_row(c.store, c.target, c.action)
        return out


def validated(uid: str | None, customer: str | None) -> tuple[str | None, str | None]:
    """The ids as given, or EraseError naming what is wrong with one (nothing is looked up for a bad id)."""
    if uid is None and customer is None:
        raise EraseError("give --uid, --customer or both")
    for name, value, pattern in (("--uid", uid, UID_RE), ("--customer", customer, ID_RE)):
        if value is None:
            continue
        if value == ERASED:
            raise EraseError(f"{name} {value!r} is the erasure tombstone, not a person")
        if not pattern.match(value):
            raise EraseError(f"{name} {value!r} is not a valid id (must match {pattern.pattern})")
    return uid, customer


def resolve(db: firestore.Client, uid: str | None, customer: str | None) -> Person:
    """The uids and customer ids of one person: those given, and what `paynowCustomers` maps between them."""
    uids = {uid} if uid else set()
    customers = {customer} if customer else set()
    if customer:
        mapped = (db.collection(MAPPINGS).document(customer).get().to_dict() or {}).get("uid")
        if isinstance(mapped, str) and mapped != ERASED:
            uids.add(mapped)
    for u in sorted(uids):
        customers.update(doc.id for doc in db.collection(MAPPINGS).where(filter=FieldFilter("uid", "==", u)).stream())
    return Person(frozenset(uids), frozenset(customers))


class Scrubber:
    """Replaces the person's ids inside strings (as whole ids: `uid:U`, `customer:C`, a reason naming them)."""

    def __init__(self, person: Person) -> None:
        ids = sorted(person.ids(), key=len, reverse=True)
        self.pattern = re.compile("(?<![A-Za-z0-9_-])(?:" + "|".join(map(re.escape, ids)) + ")(?![A-Za-z0-9_-])")

    def text(self, value: str) -> str:
        return self.pattern.sub(ERASED, value)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every id replaced, in strings, dict keys and nested values."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def envelope(self, data: bytes) -> bytes | None:
        """The envelope with the ids tombstoned (its customer and raw delivery); None if it does not decode."""
        try:
            envelope = decode_envelope(data, min_compatible=1)
        except DecodeError:
            return None
        customer = envelope["data"].get("customer")
        if customer:
            envelope["data"]["customer"] = {"id": self.text(customer["id"]), "email": None,
                                            "uid": self.text(customer["uid"]) if customer.get("uid") else None}
        raw = envelope["data"].get("rawPayload") or b""
        try:
            envelope["data"]["rawPayload"] = json.dumps(self.value(json.loads(raw)), separators=(",", ":")).encode()
        except ValueError:
            envelope["data"]["rawPayload"] = b""
        envelope["version"] = 4
        return encode_envelope(envelope)


def _query(db: firestore.Client, collection: str, name: str, values: Iterable[str]) -> Iterator[Any]:
    wanted = sorted(set(values))
    for i in range(0, len(wanted), 30):  # Firestore's `in` takes 30 values
        yield from db.collection(collection).where(filter=FieldFilter(name, "in", wanted[i:i + 30])).stream()


def firestore_changes(db: firestore.Client, person: Person, scrub: Scrubber) -> list[tuple[Any, dict[str, Any] | None,
                                                                                           str]]:
    """(document reference, new fields to merge or None to delete, description) for everything tied to `person`."""
    plan: list[tuple[Any, dict[str, Any] | None, str]] = []
    for customer in sorted(person.customers):
        ref = db.collection(MAPPINGS).document(customer)
        if ref.get().exists:
            plan.append((ref, None, "deleted (customer mapping)"))
    for uid in sorted(person.uids):
        user = db.collection(USERS).document(uid)
        for sub in user.collections():
            plan.extend((doc.reference, None, f"deleted ({sub.id})") for doc in sub.stream())
        if user.get().exists:
            plan.append((user, None, "deleted"))
    keys = {f"uid:{u}" for u in person.uids} | {f"customer:{c}" for c in person.customers}
    if person.uids:
        for collection in (CLAIMS, ORDERS):
            plan.extend((doc.reference, {"uid": ERASED}, "uid tombstoned")
                        for doc in _query(db, collection, "uid", person.uids))
    events = {doc.id: doc for doc in _query(db, EVENTS, "orderingKey", keys)} if keys else {}
    if person.uids:
        events.update({doc.id: doc for doc in _query(db, EVENTS, "uid", person.uids)})
    for doc in events.values():
        fields = doc.to_dict() or {}
        plan.append((doc.reference, {"uid": ERASED if fields.get("uid") else None,
                                     "orderingKey": scrub.text(str(fields.get("orderingKey") or ""))},
                     "uid and ordering key tombstoned"))
    letters = {doc.id: doc for doc in _query(db, dl.COLLECTION, dl.UID, person.uids)} if person.uids else {}
    if person.customers:
        letters.update({doc.id: doc for doc in _query(db, dl.COLLECTION, dl.CUSTOMER_ID, person.customers)})
    for doc in letters.values():
        plan.append((doc.reference, _dead_letter(doc.to_dict() or {}, scrub), "ids tombstoned, resolved by erasure"))
    return plan


def _dead_letter(fields: dict[str, Any], scrub: Scrubber) -> dict[str, Any]:
    """A dead letter's fields with the ids tombstoned everywhere; an unresolved one is resolved by the erasure
    (its payment belongs to nobody now: a replay must not credit the tombstone)."""
    update: dict[str, Any] = {name: scrub.value(fields.get(name)) for name in
                              (dl.UID, dl.CUSTOMER_ID, dl.REASON, dl.ORDERING_KEY, dl.ATTRIBUTES) if fields.get(name)}
    envelope = fields.get(dl.ENVELOPE)
    if envelope:
        update[dl.ENVELOPE] = scrub.envelope(bytes(envelope))
    if fields.get(dl.STATE) in dl.UNRESOLVED:
        event_id = str(fields.get(dl.EVENT_ID) or "")
        update.update({dl.STATE: dl.RESOLVED, dl.RESOLVED_AT: int(time.time() * 1000),
                       dl.RESOLVED_BY: dl.resolved_by(event_id=event_id, status="erased", by="erasure", region="")})
    return update


def erase_firestore(db: firestore.Client, person: Person, result: Result) -> None:
    plan = firestore_changes(db, person, Scrubber(person))
    for ref, _, what in plan:
        result.add("firestore", ref.path, what)
    if result.dry_run:
        return
    for i in range(0, len(plan), BATCH):
        batch = db.batch()
        for ref, fields, _ in plan[i:i + BATCH]:
            if fields is None:
                batch.delete(ref)
            else:
                batch.set(ref, fields, merge=True)
        batch.commit()


def _names_person(message: Any, person: Person, scrub: Scrubber) -> bool:
    """Whether a DLQ message (a DeadLetterRecord) is the person's: an attribute names them, or its envelope does."""
    received = message.message
    if any(scrub.pattern.search(str(v)) for v in received.attributes.values()):
        return True
    try:
        record = decode_dlq_record(bytes(received.data))
        if any(scrub.pattern.search(str(v)) for v in (record.get("originalAttributes") or {}).values()):
            return True
        customer = decode_envelope(bytes(record["originalData"]), min_compatible=1)["data"].get("customer")
    except (DecodeError, KeyError, TypeError):
        return False
    return bool(customer) and (customer.get("id") in person.customers or customer.get("uid") in person.uids)


def _held(subscriber: Any, subscription: str) -> list[Any]:
    """Every message the subscription hands out now, held (not acked) until acked or handed back: pulls until two
    in a row come back empty (the service may answer empty while messages exist)."""
    held: list[Any] = []
    empties = 0
    while empties < 2:
        received = dlq.pull_once(subscriber, subscription, PULL_BATCH)
        held.extend(received)
        empties = 0 if received else empties + 1
    return held


def erase_dlq(subscription: str, person: Person, result: Result) -> None:
    """Acknowledge (remove) the person's messages on the DLQ subscription; every other message is handed back.

    The durable record of each is its `deadLetters` document, pseudonymised by `erase_firestore`."""
    scrub = Scrubber(person)
    subscriber = pubsub_v1.SubscriberClient()
    held: list[Any] = []
    try:
        held = _held(subscriber, subscription)
        theirs = [m for m in held if _names_person(m, person, scrub)]
        for m in theirs:
            result.add("pubsub DLQ", f"{subscription} message {m.message.message_id} "
                       f"(event {m.message.attributes.get('eventId', '?')})", "acknowledged (removed)")
        if theirs and not result.dry_run:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [m.ack_id for m in theirs]})
            held = [m for m in held if m not in theirs]
    finally:
        if held:
            subscriber.modify_ack_deadline(request={"subscription": subscription, "ack_ids": [m.ack_id for m in held],
                                                    "ack_deadline_seconds": 0})
        subscriber.close()


def erase_traffic_logs(paths: Iterable[Path], person: Person, result: Result) -> None:
    """Rewrite each traffic log with the person's ids tombstoned (a generator still writing one must be stopped)."""
    scrub = Scrubber(person)
    for path in paths:
        lines = path.read_text().splitlines(keepends=True)
        changed = 0
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                out.append(line)  # not a record (a line still being written): left as it is
                continue
            scrubbed = scrub.value(record)
            if scrubbed != record:
                changed += 1
                line = json.dumps(scrubbed, separators=(",", ":")) + "\n"
            out.append(line)
        if changed:
            result.add("traffic log", str(path), f"{changed} record(s) pseudonymised")
            if not result.dry_run:
                tmp = path.with_suffix(path.suffix + ".erasing")
                tmp.write_text("".join(out))
                os.replace(tmp, path)


def erase(db: firestore.Client, *, uid: str | None, customer: str | None, dlq_subscription: str | None,
          traffic_logs: Iterable[Path] = (), dry_run: bool = False) -> Result:
    """Erase one person from Firestore, the DLQ subscription and the traffic logs; the Result lists each change."""
    uid, customer = validated(uid, customer)
    try:
        person = resolve(db, uid, customer)
        result = Result(person, dry_run=dry_run)
        erase_firestore(db, person, result)
    except exceptions.GoogleAPICallError as exc:
        raise EraseError(f"Firestore: {exc.message or exc}") from None
    if dlq_subscription:
        try:
            erase_dlq(dlq_subscription, person, result)
        except exceptions.NotFound:
            raise EraseError(f"DLQ subscription {dlq_subscription} not found") from None
        except exceptions.GoogleAPICallError as exc:
            raise EraseError(f"DLQ subscription {dlq_subscription}: {exc.message or exc}") from None
    erase_traffic_logs(traffic_logs, person, result)
    return result


def erase_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uid", help="the user to erase (their PayNow customers too)")
    parser.add_argument("--customer", help="the PayNow customer to erase (the user it maps to too)")
    parser.add_argument("--project", help="project id (default: the running stack's)")
    parser.add_argument("--database", default="(default)", help="Firestore database (default %(default)s)")
    parser.add_argument("--dlq-subscription", help="DLQ subscription (default: the project's)")
    parser.add_argument("--traffic-dir", type=Path, metavar="DIR",
                        help="traffic logs to pseudonymise (default: the running stack's; none without a stack)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")


def run_command(args: argparse.Namespace, console: Console, project: str, dlq_subscription: str,
                traffic_dir: Path | None) -> int:
    if traffic_dir is not None and not traffic_dir.is_dir():
        raise EraseError(f"--traffic-dir {traffic_dir}: no such directory")
    logs = sorted(traffic_dir.glob("*.jsonl")) if traffic_dir is not None else []
    db = firestore.Client(project=project, database=args.database)
    try:
        result = erase(db, uid=args.uid, customer=args.customer, dlq_subscription=dlq_subscription,
                       traffic_logs=logs, dry_run=args.dry_run)
    finally:
        db.close()
    if not result.changes:
        console.print(f"nothing tied to {result.person.describe()} (already erased, or never seen)")
        return 0
    console.print(result.table())
    console.print(("dry run: nothing changed; " if args.dry_run else "") +
                  f"{len(result.changes)} change(s) for {result.person.describe()}")
    return 0
