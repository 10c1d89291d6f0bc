"""The failure budget: only refusals are charged, per client address (IPv6 per /64), in a bounded table."""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from ingress import create_app
from ingress.ratelimit import TokenBucket, client_address, client_key
from tests.ingress.conftest import LEGACY, WEBHOOK, RecordingPublisher, make_settings, order_body, signed_headers

JUNK = {"content-type": "application/json", "paynow-timestamp": "1700000000000", "paynow-signature": "AAAA"}


def delivery(event_id: str) -> bytes:
    """The one place a valid PayNow delivery is built in this file (swap it when the payload shape changes)."""
    return order_body(event_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """Sets the TCP peer the way the server would, so a test can speak as any address."""

    def __init__(self, app: ASGIApp, address: str) -> None:
        self.app = app
        self.address = address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": (self.address, 40000)}
        await self.app(scope, receive, send)


class Clients:
    """One app (one limiter) spoken to from several peer addresses."""

    def __init__(self, **settings: str) -> None:
        self.publisher = RecordingPublisher()
        self.app = create_app(make_settings(**settings), publisher=self.publisher)
        self._clients: dict[str, TestClient] = {}

    def junk(self, peer: str, path: str = WEBHOOK, **headers: str) -> int:
        return self._client(peer).post(path, content=b'{"x": 1}', headers={**JUNK, **headers}).status_code

    def signed(self, peer: str, event_id: str, path: str = WEBHOOK, **headers: str) -> int:
        body = delivery(event_id)
        return self._client(peer).post(path, content=body, headers={**signed_headers(body), **headers}).status_code

    def post(self, peer: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], object]:
        response = self._client(peer).post(WEBHOOK, content=body, headers=headers)
        return response.status_code, dict(response.headers), response.json()

    def _client(self, peer: str) -> TestClient:
        if peer not in self._clients:
            self._clients[peer] = TestClient(Peer(self.app, peer)).__enter__()
        return self._clients[peer]

    def close(self) -> None:
        for client in self._clients.values():
            client.__exit__(None, None, None)


MakeClients = Callable[..., Clients]


@pytest.fixture
def clients() -> Iterator[MakeClients]:
    made: list[Clients] = []

    def make(**settings: str) -> Clients:
        made.append(Clients(**settings))
        return made[-1]

    yield make
    for c in made:
        c.close()


# -- the bucket ------------------------------------------------------------------------------------------


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
    assert all(bucket.take("a") == 0.0 for _ in range(1000)) and len(bucket) == 0


def test_an_idle_bucket_is_forgotten_once_it_would_be_full_again() -> None:
    clock = Clock()
    bucket = TokenBucket(burst=2, per_minute=60, clock=clock)  # empty to full in 2 s
    bucket.take("a")
    bucket.take("a")
    clock.now += 1.9
    assert "a" in bucket and len(bucket) == 1
    clock.now += 0.1
    assert "a" not in bucket and len(bucket) == 0
    assert [bucket.take("a") for _ in range(3)][:2] == [0.0, 0.0]  # starts full, as it would have been


def test_the_table_stays_at_its_bound_and_each_new_client_evicts_exactly_the_least_recent() -> None:
    clock = Clock()  # time stands still: nothing expires, so only the size bound can keep the table small
    bound = 100_000
    bucket = TokenBucket(burst=5, per_minute=1, max_clients=bound, clock=clock)
    addresses = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(200_000)]
    for i, address in enumerate(addresses):
        bucket.take(address)
        # one insert, one eviction (the oldest), nothing else: O(1) per new client. Sampled: a bulk purge
        # (the old rebuild) between two samples would already have taken the survivor with it.
        if i >= bound and i % 50 == 0:
            assert addresses[i - bound] not in bucket and addresses[i - bound + 1] in bucket
            assert len(bucket) == bound
    assert len(bucket) == bound


# -- which address is the client -------------------------------------------------------------------------


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 5000), "headers": headers}


CLOUD_RUN_PEER = "169.254.1.1"  # what a Cloud Run container sees as its peer: never the LB, never the client


@pytest.mark.parametrize(("hops", "peer", "forwarded", "expected"), [
    (0, "203.0.113.9", None, "203.0.113.9"),
    (0, "203.0.113.9", "198.51.100.1", "203.0.113.9"),  # no proxy in front: the header is the client's own
    (1, "127.0.0.2", "198.51.100.1", "198.51.100.1"),  # HAProxy appended the client
    (1, "127.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # left of it: written by the client
    (2, CLOUD_RUN_PEER, "203.0.113.50, 34.120.1.2", "203.0.113.50"),  # Google's LB: "<client>, <LB address>"
    (2, CLOUD_RUN_PEER, "6.6.6.6, 203.0.113.50, 34.120.1.2", "203.0.113.50"),  # a spoofed left-most entry
    (2, CLOUD_RUN_PEER, "6.6.6.6, 7.7.7.7, 2001:db8::7, 34.120.1.2", "2001:db8::7"),
    (2, CLOUD_RUN_PEER, "203.0.113.50", CLOUD_RUN_PEER),  # too few hops: the peer, never a guess
    (2, CLOUD_RUN_PEER, None, CLOUD_RUN_PEER),
    (2, CLOUD_RUN_PEER, "", CLOUD_RUN_PEER),
    (2, CLOUD_RUN_PEER, "not-an-ip, 34.120.1.2", CLOUD_RUN_PEER),  # garbage where the client should be
    (2, CLOUD_RUN_PEER, ",,,", CLOUD_RUN_PEER),
])
def test_client_address_counts_hops_from_the_right(hops: int, peer: str, forwarded: str | None,
                                                   expected: str) -> None:
    assert client_address(scope(peer, forwarded), hops) == expected


def test_several_forwarded_headers_are_one_list() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.50, 34.120.1.2")]
    assert client_address({"type": "http", "client": (CLOUD_RUN_PEER, 1), "headers": headers}, 2) == "203.0.113.50"


@given(st.lists(st.text(max_size=40), max_size=6), st.integers(0, 8))
def test_any_forwarded_header_gives_the_peer_or_an_address(entries: list[str], hops: int) -> None:
    value = ",".join(entries).encode("utf-8", "surrogatepass")
    address = client_address({"type": "http", "client": (CLOUD_RUN_PEER, 1),
                              "headers": [(b"x-forwarded-for", value)]}, hops)
    assert address == CLOUD_RUN_PEER or ipaddress.ip_address(address)


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.9", "203.0.113.9"),  # an IPv4 client on a dual-stack socket is its IPv4 address
    ("testclient", "testclient"),
])
def test_client_key(address: str, key: str) -> None:
    assert client_key(scope(address), 0) == key


# -- the middleware: refusals are charged, signed deliveries never -------------------------------------------


def test_junk_exhausts_its_senders_budget_but_its_signed_deliveries_all_pass(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_PER_MINUTE="1")  # burst 100 (the default); refill negligible during the test
    statuses = [c.junk("203.0.113.7") for _ in range(250)]
    assert statuses == [401] * 100 + [429] * 150
    assert [c.signed("203.0.113.7", f"evt-{i}") for i in range(5)] == [202] * 5
    assert len(c.publisher.messages) == 5
    assert c.junk("203.0.113.7") == 429  # and the signed ones neither refilled nor spent the budget


def test_the_429_names_the_refusal_it_replaces_and_when_to_retry(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="2", RATE_LIMIT_PER_MINUTE="6")  # a token every 10 s
    assert [c.junk("203.0.113.7", path) for path in (WEBHOOK, LEGACY)] == [401, 401]
    status, headers, body = c.post("203.0.113.7", b"{}", JUNK)
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 10
    assert body == {"error": "rate_limited", "detail": "too many refused requests from this client (this one: "
                    f"invalid_signature); retry in {headers['retry-after']} s"}


def test_junk_from_one_client_does_not_touch_another(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="3", RATE_LIMIT_PER_MINUTE="1")
    assert [c.junk("203.0.113.7") for _ in range(5)] == [401, 401, 401, 429, 429]
    assert [c.junk("198.51.100.8") for _ in range(4)] == [401, 401, 401, 429]


def test_ipv6_clients_are_one_client_per_64(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="3", RATE_LIMIT_PER_MINUTE="1")
    assert [c.junk(f"2001:db8:1:2::{i:x}") for i in range(1, 4)] == [401, 401, 401]
    assert c.junk("2001:db8:1:2:ffff:ffff:ffff:fffe") == 429  # same /64, another address: same bucket
    assert c.junk("2001:db8:1:3::1") == 401  # the next /64 is someone else


def test_correctly_signed_requests_are_never_charged(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    assert [c.signed("203.0.113.7", f"evt-{i}") for i in range(10)] == [202] * 10
    assert c.signed("203.0.113.7", "evt-0") == 200  # a duplicate is not a refusal either
    assert c.junk("203.0.113.7") == 401  # the one token is still there


def test_refusals_after_a_matching_signature_are_neither_charged_nor_replaced(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    assert [c.junk("203.0.113.7") for _ in range(2)] == [401, 429]
    stale = signed_headers(b"{}", timestamp_ms=1_000_000_000_000)
    assert c.post("203.0.113.7", b"{}", stale)[2]["error"] == "stale_timestamp"  # type: ignore[index]
    status, _, body = c.post("203.0.113.7", b"{}", signed_headers(b"{}"))  # signed but unmappable
    assert status == 400 and body["error"] == "invalid_payload"  # type: ignore[index]


def test_5xx_answers_are_not_charged(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    c.app.state.ingress.set_draining(True, "test")
    assert [c.junk("203.0.113.7") for _ in range(3)] == [503] * 3  # the instance's state, not the client's fault
    c.app.state.ingress.set_draining(False, "test")
    assert c.junk("203.0.113.7") == 401


def test_a_forged_forwarded_header_does_not_escape_the_budget(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    statuses = [c.junk("203.0.113.7", **{"x-forwarded-for": f"198.51.100.{i}"}) for i in range(3)]
    assert statuses == [401, 429, 429]  # FORWARDED_HOPS=0: no proxy in front, the header is the client's own


def test_behind_one_proxy_the_forwarded_client_is_charged(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1", FORWARDED_HOPS="1")
    # HAProxy appends the real client; what the client wrote to the left of it does not count
    real = [c.junk("127.0.0.2", **{"x-forwarded-for": f"6.6.6.{i}, 198.51.100.9"}) for i in range(3)]
    assert real == [401, 429, 429]
    assert c.junk("127.0.0.2", **{"x-forwarded-for": "198.51.100.10"}) == 401  # another client behind it


def test_behind_google_s_load_balancer_each_client_has_its_own_budget(clients: MakeClients) -> None:
    """Cloud Run shows every request from the same peer: the client is counted from the right of X-Forwarded-For,
    so one client's junk never turns another's refusals (a retired secret: 401) into 429, and rewriting the
    left-hand entries does not buy a fresh budget."""
    c = clients(RATE_LIMIT_BURST="2", RATE_LIMIT_PER_MINUTE="1", FORWARDED_HOPS="2")
    lb = "34.120.1.2"
    spoofed = [c.junk(CLOUD_RUN_PEER, **{"x-forwarded-for": f"6.6.{i}.{i}, 203.0.113.66, {lb}"}) for i in range(4)]
    assert spoofed == [401, 401, 429, 429]
    assert [c.junk(CLOUD_RUN_PEER, **{"x-forwarded-for": f"198.51.100.9, {lb}"}) for _ in range(2)] == [401, 401]
    assert c.signed(CLOUD_RUN_PEER, "7001", **{"x-forwarded-for": f"203.0.113.66, {lb}"}) == 202


def test_health_endpoints_are_not_rate_limited(clients: MakeClients) -> None:
    c = clients(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    client = c._client("203.0.113.7")
    assert {client.get("/nope").status_code for _ in range(5)} == {404}
    assert {client.get("/readyz").status_code for _ in range(5)} == {200}
