"""Property: whatever arrives, the answer is a documented status with a JSON body, never a 500, and nothing is
published unless the request carried a valid, fresh signature."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from ingress import create_app
from schemas.signing import signature as sign
from tests.ingress.conftest import (
    LEGACY,
    OLD_SECRET,
    SECRET,
    WEBHOOK,
    RecordingPublisher,
    make_settings,
    now_ms,
    order_body,
)

DOCUMENTED = {200, 202, 400, 401, 413, 415}


@dataclass
class Harness:
    client: TestClient
    publisher: RecordingPublisher


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    publisher = RecordingPublisher()
    with TestClient(create_app(make_settings(RATE_LIMIT_PER_MINUTE="0"), publisher=publisher)) as client:
        yield Harness(client, publisher)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Valid PayNow bodies, mutated ones, arbitrary JSON and arbitrary bytes."""
    kind = draw(st.sampled_from(["valid", "mutated", "json", "bytes", "big"]))
    if kind == "valid":
        return order_body(draw(st.text(min_size=1, max_size=40)), uid=draw(st.none() | st.text(max_size=40)),
                          customer=draw(st.text(min_size=1, max_size=40)), lines=draw(st.integers(1, 3)))
    if kind == "mutated":
        doc = json.loads(order_body())
        path = draw(st.sampled_from([("event_id",), ("event_type",), ("body",), ("body", "id"),
                                     ("body", "lines"), ("body", "customer"), ("body", "checkout"),
                                     ("body", "total_amount")]))
        target = doc
        for key in path[:-1]:
            target = target[key]
        if draw(st.booleans()):
            del target[path[-1]]
        else:
            target[path[-1]] = draw(json_values)
        return json.dumps(doc).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "big":
        return b"{" + b" " * draw(st.integers(65_000, 70_000)) + b"}"
    return draw(st.binary(max_size=300))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str], bool]:
    """Half correctly signed (then the body decides), half with any mix of garbled headers."""
    body = draw(payloads())
    path = draw(st.sampled_from([WEBHOOK, LEGACY]))
    secret = draw(st.sampled_from([SECRET, OLD_SECRET]))
    if draw(st.booleans()):
        offset = draw(st.integers(-280_000, 280_000))
        timestamp = now_ms() + offset
        headers = {"content-type": "application/json", "paynow-timestamp": str(timestamp),
                   "paynow-signature": sign(secret, timestamp, body)}
        return path, body, headers, True
    offset = draw(st.one_of(st.integers(-600_000, 600_000), st.integers(-10**16, 10**16)))
    timestamp = now_ms() + offset  # drawn relative to now, so examples replay the same way
    latin1 = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
    headers = {}
    content_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                         "application/xml", None]))
    if content_type is not None:
        headers["content-type"] = content_type
    if draw(st.integers(0, 9)):
        headers["paynow-timestamp"] = draw(st.one_of(st.just(str(timestamp)), latin1))
    if draw(st.integers(0, 9)):
        wrong = draw(st.sampled_from([secret, b"wrong-secret"]))
        headers["paynow-signature"] = draw(st.one_of(st.just(sign(wrong, timestamp, body)), latin1))
    signed_ok = (headers.get("paynow-signature") == sign(secret, timestamp, body)
                 and headers.get("paynow-timestamp") == str(timestamp) and abs(offset) < 290_000)
    return path, body, headers, signed_ok


@given(requests())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
def test_only_documented_answers_and_no_unsigned_publish(harness: Harness,
                                                        request: tuple[str, bytes, dict[str, str], bool]) -> None:
    path, body, headers, signed_ok = request
    before = len(harness.publisher.messages)
    raw_headers = {name: value.encode("latin-1") for name, value in headers.items()}  # garbled bytes too
    response = harness.client.post(path, content=body, headers=raw_headers)
    published = len(harness.publisher.messages) - before
    event(f"status {response.status_code}")
    assert response.status_code in DOCUMENTED, (response.status_code, response.text)
    document = response.json()
    if response.status_code >= 400:
        assert set(document) == {"error", "detail"}
    else:
        assert document["status"] == "accepted"
    if not signed_ok:
        assert published == 0 and response.status_code not in (200, 202)
    assert published == (1 if response.status_code == 202 else 0)
