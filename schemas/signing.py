"""PayNow's webhook signature (DESIGN §1): base64(HMAC-SHA256(secret, f"{timestamp}." + body)), epoch-ms timestamp."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "paynow-signature"
TIMESTAMP_HEADER = "paynow-timestamp"


def mac(secret: str | bytes, timestamp: str | int, body: bytes) -> bytes:
    """The raw HMAC-SHA256 over "{timestamp}." + body; the verifier passes the timestamp header as received."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).digest()


def signature(secret: str | bytes, timestamp_ms: int, body: bytes) -> str:
    """The `paynow-signature` value PayNow sends for `body` at `timestamp_ms`."""
    return base64.b64encode(mac(secret, timestamp_ms, body)).decode()


def signed_headers(secret: str | bytes, body: bytes, *, timestamp_ms: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """The headers PayNow sends with `body`: content type, timestamp (now unless given) and signature."""
    ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    return {
        "content-type": content_type,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, body),
    }


def new_secret() -> str:
    """A fresh webhook secret in PayNow's style (url-safe, 32 random bytes)."""
    return "whsec_" + secrets.token_urlsafe(32)
