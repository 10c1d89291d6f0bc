"""PayNow webhook signatures: base64 HMAC-SHA256 over "{timestamp}." + body, several secrets, ±300 s window."""
from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from schemas.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, mac

TOLERANCE_MS = 300_000
_MAX_TIMESTAMP_DIGITS = 15


class SignatureError(Exception):
    """A refused signature; `code` is the error code and `status` the HTTP status to answer with."""

    def __init__(self, code: str, detail: str, status: int = 401, *, authenticated: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.authenticated = authenticated  # the MAC matched an active secret; only the window failed


def verify(secrets: Sequence[bytes], timestamp: str | None, signature: str | None, body: bytes,
           *, now_ms: int) -> int:
    """Return the signed timestamp (epoch ms) or raise SignatureError.

    Every active secret is tried with a constant-time compare (rotation with overlap). The window check runs
    after the MAC so an unauthenticated caller learns nothing about the clock.
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
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(mac(secret, timestamp, body), given)
    if not matched:
        raise SignatureError("invalid_signature", f"{SIGNATURE_HEADER} does not match any active secret")
    timestamp_ms = int(timestamp)
    if abs(now_ms - timestamp_ms) > TOLERANCE_MS:
        direction = "past" if timestamp_ms < now_ms else "future"
        raise SignatureError("stale_timestamp",
                             f"{TIMESTAMP_HEADER} is more than {TOLERANCE_MS // 1000} s in the {direction}", 400,
                             authenticated=True)
    return timestamp_ms
