"""PayNow webhook signatures: base64 HMAC-SHA256 over "{timestamp}." + body, several secrets, ±300 s window.

A secret may be bound to one PayNow event type (PayNow gives each webhook subscription, which subscribes to one
event type, its own secret): it then verifies only deliveries whose `event_type` is that type, so a leaked secret
of a low-value subscription cannot sign an ON_ORDER_COMPLETED.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from schemas.paynow import PayloadError, parse_delivery
from schemas.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, mac

TOLERANCE_MS = 300_000
_MAX_TIMESTAMP_DIGITS = 15
_MAX_EVENT_TYPE = 64


@dataclass(frozen=True)
class WebhookSecret:
    """One active secret; `event_type` None verifies any type (a bare secret, warned about at start)."""

    secret: bytes = field(repr=False)
    event_type: str | None = None


class SignatureError(Exception):
    """A refused signature; `code` is the error code and `status` the HTTP status to answer with."""

    def __init__(self, code: str, detail: str, status: int = 401, *, authenticated: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.authenticated = authenticated  # the MAC matched an active secret; only the window failed


def event_type_of(body: bytes) -> str | None:
    """The delivery's top-level `event_type`, or None when the body is not a JSON object with a short string there.

    Runs only on a body whose MAC matched a bound secret, parsed as the mapper does (orjson, the standard library for
    what orjson refuses), which answers any hostile body (bad UTF-8, too deep, not an object) with PayloadError.
    """
    try:
        parsed = orjson.loads(body)  # the mapper's parser without its long-digit scan, which only keeps big numbers
    except orjson.JSONDecodeError:
        try:
            parsed = parse_delivery(body)
        except PayloadError:
            return None
    value = parsed.get("event_type") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) and len(value) <= _MAX_EVENT_TYPE else None


def verify(secrets: Sequence[WebhookSecret | bytes], timestamp: str | None, signature: str | None, body: bytes,
           *, now_ms: int) -> int:
    """Return the signed timestamp (epoch ms) or raise SignatureError.

    Every active secret is tried with a constant-time compare (rotation with overlap), all of them whatever
    matched. A delivery that only a bound secret signed must carry that secret's event type. The window check
    runs after the MAC so an unauthenticated caller learns nothing about the clock.
    """
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise SignatureError("missing_signature", f"header {missing} is missing")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError("invalid_signature", f"header {TIMESTAMP_HEADER} must be epoch milliseconds")
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("invalid_signature", f"header {SIGNATURE_HEADER} is not base64") from None
    any_type = False
    bound: set[str] = set()
    for entry in secrets:
        secret, event_type = (entry.secret, entry.event_type) if isinstance(entry, WebhookSecret) else (entry, None)
        if hmac.compare_digest(mac(secret, timestamp, body), given):
            if event_type is None:
                any_type = True
            else:
                bound.add(event_type)
    if not any_type and not bound:
        raise SignatureError("invalid_signature", f"{SIGNATURE_HEADER} does not match any active secret")
    if not any_type:
        event_type = event_type_of(body)
        if event_type not in bound:
            delivered = "has no readable event_type" if event_type is None else f"is {event_type}"
            raise SignatureError("secret_bound_to_other_event_type",
                                 f"{SIGNATURE_HEADER} matches a secret bound to {', '.join(sorted(bound))}, but "
                                 f"this delivery's event_type {delivered}")
    timestamp_ms = int(timestamp)
    if abs(now_ms - timestamp_ms) > TOLERANCE_MS:
        direction = "past" if timestamp_ms < now_ms else "future"
        raise SignatureError("stale_timestamp",
                             f"{TIMESTAMP_HEADER} is more than {TOLERANCE_MS // 1000} s in the {direction}", 400,
                             authenticated=True)
    return timestamp_ms
