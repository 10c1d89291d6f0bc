"""PayNow's webhook signature (DESIGN §1): base64(HMAC-SHA256(secret, f"{timestamp}." + body)), epoch-ms timestamp."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "paynow-signature"
TIMESTAMP_HEADER = "paynow-timestamp"


def signature(secret: str, timestamp_ms: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_headers(secret: str, body: bytes, *, timestamp_ms: int | None = None) -> dict[str, str]:
    """The headers PayNow sends with `body`: content type, timestamp (now unless given) and signature."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return {
        "content-type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, body),
    }


def new_secret() -> str:
    """A fresh webhook secret in PayNow's style (url-safe, 32 random bytes)."""
    return "whsec_" + secrets.token_urlsafe(32)
