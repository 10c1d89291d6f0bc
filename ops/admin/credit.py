"""`paynow credit`: a manual credit or debit through the pipeline's commit plan (aggregate, claim, entry, wallet)."""
from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore

from pipeline.firestore_transport import FirestoreConfig
from pipeline.ledger import MANUAL, valid_id
from pipeline.model import Event, Message
from pipeline.sink import Applied, LedgerWriter
from schemas.codec import CURRENT_VERSION, MIN_COMPATIBLE

REGION = "manual"
MAX_KEY = 121  # "manual-" + key is the event id, at most 128 characters
MAX_REASON = 500


class CreditError(Exception):
    """The credit could not be made (or was refused); the message says why and what to do."""


class BadCredit(ValueError):
    """Arguments that are each valid but not together."""


@dataclass(frozen=True)
class Credit:
    """One manual credit (points > 0) or debit (< 0); with an order, the credit of that order's purchase."""

    uid: str
    points: int
    reason: str
    order_id: str | None = None
    key: str | None = None

    def stable_key(self) -> str:
        """The idempotency key: `--key`, else a hash of the arguments (the same command twice credits once)."""
        if self.key is not None:
            return self.key
        text = "\0".join((self.uid, str(self.points), self.reason, self.order_id or ""))
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def event_id(self) -> str:
        return f"manual-{self.stable_key()}"

    def event(self, now_ms: int) -> Event:
        """The credit as the ledger rules take it: an event only this tool builds (never read from the topic)."""
        envelope = {"version": CURRENT_VERSION, "minCompatible": MIN_COMPATIBLE, "eventId": self.event_id(),
                    "eventType": MANUAL, "timestamp": now_ms, "region": REGION,
                    "data": {"orderId": self.order_id, "customer": None, "lines": [], "subscription": None,
                             "refund": None, "chargeback": None, "totalCents": None, "currency": None,
                             "rawPayload": b"",
                             "manual": {"points": self.points, "reason": self.reason, "key": self.stable_key()}}}
        return Event(Message(b"", {}, now_ms, message_id=self.event_id()), envelope, self.uid)


def _id(what: str, max_len: int = 128) -> Any:
    def parse(text: str) -> str:
        if len(text) > max_len or not valid_id(text):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a valid {what}: 1-{max_len} of A-Z a-z 0-9 _ -, not of the reserved form __x__")
        return text
    parse.__name__ = what
    return parse


def _points(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of points") from None
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0 (positive credits, negative debits)")
    return value


def _reason(text: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_REASON or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_REASON} printable characters")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uid", type=_id("uid"), required=True, help="the user credited (users/{uid})")
    parser.add_argument("--points", type=_points, required=True,
                        help="points: positive credits, negative debits (with --order: positive, the order's amount)")
    parser.add_argument("--reason", type=_reason, required=True, help="why (kept on the ledger entry)")
    parser.add_argument("--order", type=_id("order id"), metavar="ID",
                        help="credit this PayNow order's purchase (`purchase:{ID}`): its webhook, arriving later, "
                             "is then a duplicate and its refund or chargeback reverses these points")
    parser.add_argument("--key", type=_id("key", MAX_KEY),
                        help="idempotency key (default: derived from uid, points, reason and order)")
    parser.add_argument("--project", help="project id (default: the running stack's)")


def from_args(args: argparse.Namespace) -> Credit:
    if args.order is not None and args.points < 0:
        raise BadCredit("an order is credited with positive points; to take them back, the order's refund or "
                          "chargeback reverses it (or debit without --order)")
    return Credit(args.uid, args.points, args.reason, args.order, args.key)


def apply(client: firestore.Client, project: str, credit: Credit) -> tuple[Applied, str]:
    """Commit the credit through LedgerWriter (re-read and decide again on conflict, wedged keys detected);
    returns its fate and a sentence for the operator. CreditError when nothing could be written."""
    writer = LedgerWriter(client, FirestoreConfig(project, region=REGION), threads=1)
    try:
        [result] = writer.apply([credit.event(int(time.time() * 1000))])
    finally:
        writer.close()
    key = f"purchase:{credit.order_id}" if credit.order_id else f"manual:{credit.stable_key()}"
    target = f"order {credit.order_id}" if credit.order_id else f"key {key}"
    if result.status == "applied":
        assert result.decision is not None
        return result, (f"credited {result.decision.delta():+d} points to {credit.uid} ({target}; entries "
                        f"{', '.join(result.decision.entries)})")
    if result.status == "duplicate":
        return result, f"already done: {credit.event_id()} was committed before; nothing written"
    if result.status == "duplicate_business_key":
        claim = (client.document(f"ledgerKeys/{key}").get().to_dict() or {})
        if claim.get("eventId") == credit.event_id():
            return result, f"already done: {target} was credited by this credit before; nothing credited"
        raise CreditError(f"{target} was already credited (event {claim.get('eventId')}: {claim.get('amount')} "
                          f"points to {claim.get('uid')}); nothing credited")
    if result.status == "unavailable":
        raise CreditError(f"Firestore unavailable, nothing written: {result.reason} (run the same command again)")
    if result.status == "wedged_key":
        raise CreditError(f"{key} is held outside the commit plan (a hand credit or a partial restore), nothing "
                          f"written: {result.reason}. See RUNBOOK \"Manual credits\"")
    raise CreditError(f"refused ({result.status}), nothing written: {result.reason}")


def run_command(credit: Credit, project: str) -> str:
    client = firestore.Client(project=project)
    try:
        _, said = apply(client, project, credit)
    finally:
        client.close()
    return said

