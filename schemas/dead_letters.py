"""The durable dead-letter record `deadLetters/{letterId}` (DESIGN §3): its fields, states and id.

Every dead letter the pipeline publishes to the DLQ topic is also recorded here before its message is acknowledged,
and stays until it is resolved (Pub/Sub keeps the DLQ copy 7 days at most). The pipeline writes it, `paynow dlq`
lists, shows and replays from it, reconcile and the audit read it, erasure scans it. Times are epoch milliseconds,
as in the Avro DeadLetterRecord.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Final

COLLECTION: Final = "deadLetters"

OPEN: Final = "open"
"""Dead-lettered and not (yet) replayed: a payment at risk."""
REPLAYED: Final = "replayed"
"""Re-published by `paynow dlq replay`; resolved once the event commits, open again if it fails again."""
RESOLVED: Final = "resolved"
"""Its event is committed in the ledger (`resolvedBy` says by which commit)."""
STATES: Final = (OPEN, REPLAYED, RESOLVED)
UNRESOLVED: Final = (OPEN, REPLAYED)

# field names others rely on (erasure, the simulation, reconcile, the audit)
EVENT_ID, VERDICT, REASON, STEP, FAILED_AT, SOURCE_REGION = (
    "eventId", "verdict", "reason", "step", "failedAt", "sourceRegion")
STATE, RESOLVED_BY, ENVELOPE, ATTRIBUTES, UID, CUSTOMER_ID, ORDER_ID = (
    "state", "resolvedBy", "envelope", "attributes", "uid", "customerId", "orderId")
WORKER_REGION, FIRST_FAILED_AT, FAILURES, ORDERING_KEY = "workerRegion", "firstFailedAt", "failures", "orderingKey"
REPLAYED_AT, REPLAYS, RESOLVED_AT, ENVELOPE_BYTES = "replayedAt", "replays", "resolvedAt", "envelopeBytes"

MAX_ENVELOPE_BYTES: Final = 900_000
"""Firestore refuses documents over 1 MiB: a larger envelope is not stored (`envelope` null, `envelopeBytes` kept),
so the record still exists and alerts; only its Pub/Sub copy can then be replayed."""

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_RESERVED = re.compile(r"^__.*__$")


def letter_id(event_id: str | None, data: bytes) -> str:
    """The record's document id: the eventId when it is a safe path segment, else a digest of the message bytes
    (undecodable messages have no eventId). The same event dead-lettered again gets the same id."""
    if event_id and _ID_RE.match(event_id) and not _RESERVED.match(event_id):
        return event_id
    return "sha256-" + hashlib.sha256(data).hexdigest()[:40]


def letter_path(event_id: str | None, data: bytes) -> str:
    return f"{COLLECTION}/{letter_id(event_id, data)}"


def record_fields(*, event_id: str | None, verdict: str, reason: str, step: str, failed_at_ms: int,
                  source_region: str, worker_region: str, data: bytes, attributes: dict[str, str],
                  ordering_key: str, uid: str | None, customer_id: str | None,
                  order_id: str | None) -> dict[str, Any]:
    """The fields one dead-lettering sets (an upsert: `firstFailedAt` and `failures` are kept by the writer as the
    minimum and a count; `replayedAt`/`replays` stay)."""
    stored = data if len(data) <= MAX_ENVELOPE_BYTES else None
    return {EVENT_ID: event_id, VERDICT: verdict, REASON: reason, STEP: step, FAILED_AT: failed_at_ms,
            SOURCE_REGION: source_region, WORKER_REGION: worker_region, STATE: OPEN, RESOLVED_BY: None,
            RESOLVED_AT: None, ENVELOPE: stored, ENVELOPE_BYTES: len(data), ATTRIBUTES: dict(attributes),
            ORDERING_KEY: ordering_key, UID: uid, CUSTOMER_ID: customer_id, ORDER_ID: order_id}


def resolved_by(*, event_id: str, status: str, by: str, region: str, message_id: str = "") -> dict[str, Any]:
    """What resolved a dead letter: the commit of `webhookEvents/{eventId}` (`by`: `replay` when the replayed
    event's own commit marked it, `sweep` when found committed later, e.g. PayNow re-sent it or reconcile
    recovered it), with that commit's status."""
    return {"commit": f"webhookEvents/{event_id}", "eventId": event_id, "status": status, "by": by,
            "region": region, "messageId": message_id}
