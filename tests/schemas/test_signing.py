"""The traffic generator signs exactly as PayNow does, and as the ingress verifies."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from ingress.signature import SignatureError, verify
from schemas.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, new_secret, signature, signed_headers


def test_signature_is_base64_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = base64.b64encode(hmac.new(b"s3cret", b"1700000000000.{\"a\":1}", hashlib.sha256).digest()).decode()
    assert signature("s3cret", 1700000000000, b'{"a":1}') == expected


def test_signed_headers_verify_in_the_ingress() -> None:
    body = b'{"id":"evt_1"}'
    headers = signed_headers("whsec_x", body, timestamp_ms=1_700_000_000_000)
    assert headers["content-type"] == "application/json"
    assert headers[TIMESTAMP_HEADER] == "1700000000000"
    assert verify([b"other", b"whsec_x"], headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], body,
                  now_ms=1_700_000_000_500) == 1_700_000_000_000


def test_a_tampered_body_or_another_secret_is_refused_by_the_ingress() -> None:
    headers = signed_headers("whsec_x", b"{}", timestamp_ms=1_700_000_000_000)
    with pytest.raises(SignatureError):
        verify([b"whsec_x"], headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], b"{ }", now_ms=1_700_000_000_000)
    with pytest.raises(SignatureError):
        verify([b"whsec_y"], headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], b"{}", now_ms=1_700_000_000_000)


def test_new_secrets_are_distinct_and_long() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_") and len(a) > 40
