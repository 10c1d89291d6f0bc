"""Signature verification: secrets, rotation, tampering, the ±300 s window and garbled headers."""
from __future__ import annotations

import pytest

from ingress.signature import SignatureError, verify
from schemas import signing

SECRETS = (b"new-secret", b"old-secret")
BODY = b'{"id": "evt-1"}'
NOW = 1_780_000_000_000


def check(timestamp: str | None, signature: str | None, body: bytes = BODY, secrets: tuple[bytes, ...] = SECRETS,
          now_ms: int = NOW) -> int:
    return verify(secrets, timestamp, signature, body, now_ms=now_ms)


def refusal(timestamp: str | None, signature: str | None, body: bytes = BODY, **kwargs: object) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        check(timestamp, signature, body, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_valid_signature_returns_the_signed_timestamp() -> None:
    assert check(str(NOW), signing.signature(b"new-secret", NOW, BODY)) == NOW


def test_signature_matches_the_documented_construction() -> None:
    import base64
    import hashlib
    import hmac
    expected = base64.b64encode(hmac.new(b"k", b"1700000000000." + BODY, hashlib.sha256).digest()).decode()
    assert signing.signature(b"k", 1_700_000_000_000, BODY) == expected


def test_rotation_accepts_either_active_secret_and_nothing_else() -> None:
    assert check(str(NOW), signing.signature(b"old-secret", NOW, BODY)) == NOW
    assert check(str(NOW), signing.signature(b"new-secret", NOW, BODY)) == NOW
    old = signing.signature(b"old-secret", NOW, BODY)
    assert refusal(str(NOW), old, secrets=(b"new-secret",)).code == "invalid_signature"


def test_wrong_secret_is_refused_with_401() -> None:
    error = refusal(str(NOW), signing.signature(b"guess", NOW, BODY))
    assert (error.status, error.code) == (401, "invalid_signature")


def test_tampered_body_is_refused() -> None:
    assert refusal(str(NOW), signing.signature(b"new-secret", NOW, BODY), body=BODY + b" ").code == "invalid_signature"


def test_signature_is_bound_to_the_timestamp() -> None:
    assert refusal(str(NOW + 1), signing.signature(b"new-secret", NOW, BODY), now_ms=NOW).code == "invalid_signature"


@pytest.mark.parametrize(("offset_ms", "direction"), [(-300_001, "past"), (300_001, "future")])
def test_timestamp_outside_the_window_is_stale(offset_ms: int, direction: str) -> None:
    ts = NOW + offset_ms
    error = refusal(str(ts), signing.signature(b"new-secret", ts, BODY))
    assert (error.status, error.code) == (400, "stale_timestamp")
    assert error.detail == f"paynow-timestamp is more than 300 s in the {direction}"


@pytest.mark.parametrize("offset_ms", [-300_000, 300_000])
def test_window_edges_are_accepted(offset_ms: int) -> None:
    ts = NOW + offset_ms
    assert check(str(ts), signing.signature(b"new-secret", ts, BODY)) == ts


def test_seconds_instead_of_milliseconds_is_stale() -> None:
    ts = NOW // 1000
    assert refusal(str(ts), signing.signature(b"new-secret", ts, BODY)).code == "stale_timestamp"


@pytest.mark.parametrize(("timestamp", "signature", "code"), [
    (None, "abc=", "missing_signature"),
    ("", "abc=", "missing_signature"),
    (str(NOW), None, "missing_signature"),
    ("17e11", "abc=", "invalid_signature"),
    ("-1780000000000", "abc=", "invalid_signature"),
    ("١٢٣", "abc=", "invalid_signature"),  # non-ASCII digits
    ("9" * 40, "abc=", "invalid_signature"),
    (str(NOW), "not base64!", "invalid_signature"),
    (str(NOW), "é", "invalid_signature"),
    (str(NOW), "", "missing_signature"),
])
def test_garbled_headers_are_401(timestamp: str | None, signature: str | None, code: str) -> None:
    error = refusal(timestamp, signature)
    assert (error.status, error.code) == (401, code)
