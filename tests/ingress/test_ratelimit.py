"""Token bucket arithmetic and which address is the client (X-Forwarded-For only from trusted proxies)."""
from __future__ import annotations

import ipaddress

import pytest
from starlette.testclient import TestClient

from ingress import create_app
from ingress.ratelimit import TokenBucket, client_address
from tests.ingress.conftest import WEBHOOK, RecordingPublisher, make_settings, order_body, signed_headers

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(burst=3, per_minute=60, clock=clock)
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(1.0)
    assert bucket.take("b") == 0.0  # buckets are per client
    clock.now += 0.5
    assert bucket.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take("a") == 0.0


def test_bucket_never_exceeds_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(burst=2, per_minute=600, clock=clock)
    clock.now += 3600
    assert [bucket.take("a") > 0 for _ in range(3)] == [False, False, True]


def test_zero_rate_disables_limiting() -> None:
    bucket = TokenBucket(burst=1, per_minute=0)
    assert all(bucket.take("a") == 0.0 for _ in range(1000))


def test_full_buckets_are_forgotten_when_there_are_too_many_clients() -> None:
    clock = Clock()
    bucket = TokenBucket(burst=1, per_minute=60, max_clients=10, clock=clock)
    for i in range(10):
        bucket.take(f"old-{i}")
    clock.now += 5
    bucket.take("new")
    assert bucket.take("old-0") == 0.0  # refilled and forgotten, so it starts full
    assert bucket.take("new") > 0


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 5000), "headers": headers}


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.9", None, "203.0.113.9"),
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # not from a trusted proxy: header ignored
    ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
    ("10.1.2.3", "1.1.1.1, 198.51.100.1, 10.0.0.5", "198.51.100.1"),  # right-most untrusted hop
    ("10.1.2.3", None, "10.1.2.3"),
    ("10.1.2.3", "10.0.0.7", "10.0.0.7"),
])
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(scope(peer, forwarded), PROXIES) == expected


def test_forged_forwarded_header_does_not_escape_the_limit() -> None:
    publisher = RecordingPublisher()
    app = create_app(make_settings(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1"), publisher=publisher)
    with TestClient(app) as client:  # the test client's peer is "testclient", not a trusted proxy
        statuses = []
        for i in range(3):
            body = order_body(f"evt-{i}")
            headers = {**signed_headers(body), "x-forwarded-for": f"198.51.100.{i}"}
            statuses.append(client.post(WEBHOOK, content=body, headers=headers).status_code)
    assert statuses == [202, 429, 429]


def test_health_endpoints_are_not_rate_limited() -> None:
    app = create_app(make_settings(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1"), publisher=RecordingPublisher())
    with TestClient(app) as client:
        assert {client.get("/readyz").status_code for _ in range(5)} == {200}
