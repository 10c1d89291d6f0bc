"""The ingress's envelope encoder writes exactly what schemas.encode_envelope writes."""
from __future__ import annotations

import pytest

from ingress.envelope import encode
from schemas import decode_envelope, encode_envelope, envelope_from_payload
from tests.ingress.conftest import order_body


@pytest.mark.parametrize("body", [order_body("e1"), order_body("e2", uid=None, lines=3)])
def test_encode_is_byte_equal_to_the_schemas_codec(body: bytes) -> None:
    envelope = envelope_from_payload(body, timestamp_ms=1_780_000_000_000, region="us-central1")
    data = encode(envelope)
    assert data == encode_envelope(envelope)
    assert decode_envelope(data)["eventId"] == envelope["eventId"]
