"""Per-client budget of refused requests: only refusals are charged, and an exhausted client's refusals become 429."""
from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Collection

from cachetools import TTLCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.responses import error

# Refusals the webhook gives only after the signature matched: whoever sent them holds a secret, and PayNow's
# dashboard should show the real reason (the field that did not map), so they are never charged nor replaced.
IPV6_CLIENT_PREFIX = 64  # one subscriber's allocation: a client rotating addresses inside it stays one client


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(scope: Scope, hops: int = 0) -> str:
    """The caller's address, counted from the right of X-Forwarded-For: the deployment's `hops` proxies each append
    one entry (Google's LB appends "<client>, <LB address>": 2), so the client is the `hops`-th entry from the right
    and everything left of it was written by the client and may be forged. With `hops` 0, too few entries, or an
    entry that is not an IP address, the TCP peer (what a request that bypassed the proxies shows)."""
    peer = str((scope.get("client") or ("unknown", 0))[0])
    if hops <= 0:
        return peer
    forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    entries = ",".join(forwarded).split(",")
    if len(entries) < hops or not forwarded:
        return peer
    ip = _ip(entries[-hops])
    return peer if ip is None else str(ip)


def client_key(scope: Scope, hops: int = 0) -> str:
    """The bucket a caller is charged to: its address, an IPv6 address widened to its /64."""
    address = client_address(scope, hops)
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return address if ip is None else str(ip)


class TokenBucket:
    """`burst` tokens per client, refilled at `per_minute` / 60 per second; per_minute 0 turns limiting off.

    Buckets live in a TTL + LRU cache of at most `max_clients`: a bucket untouched for burst / rate seconds is
    full again, the same as a client never seen, so expiring it changes no answer; past `max_clients` the least
    recently charged is dropped. Each take is O(1) (cachetools expires from the head of a linked list).
    """

    def __init__(self, burst: int, per_minute: int, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._clock = clock
        refill = self.burst / self.rate if self.rate > 0 else 1.0
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(max_clients, refill, timer=clock)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, client: str) -> bool:
        return client in self._buckets

    def take(self, client: str) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)  # also keeps an active offender's bucket from LRU eviction
        return (1.0 - tokens) / self.rate


def charged(status: int, state: dict[str, object]) -> bool:
    """A refusal the caller could have avoided without a secret: 4xx (not 429), not after a matching signature
    (the webhook marks the request `signed` once a secret verified it, whatever it answers after that)."""
    return 400 <= status < 500 and status != 429 and not state.get("signed")


class RateLimitMiddleware:
    """Lets every request on `paths` through, then charges the client's bucket for a refusal; a client whose
    bucket is empty gets 429 + Retry-After instead of that refusal. A request the app accepts (or fails with
    5xx) is neither charged nor changed, so unsigned junk can never hold back a correctly signed delivery,
    even one from the same address."""

    def __init__(self, app: ASGIApp, *, bucket: TokenBucket, forwarded_hops: int, paths: Collection[str]) -> None:
        self.app = app
        self.bucket = bucket
        self.hops = forwarded_hops
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or not self.bucket.enabled:
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_or_replace(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the body of the refusal the 429 replaced
            if message["type"] == "http.response.start":
                state = scope.get("state", {})
                reason = state.get("reason")
                if charged(message["status"], state):
                    wait = self.bucket.take(client_key(scope, self.hops))
                    if wait > 0:
                        replaced = True
                        await self._too_many(scope, receive, send, wait, reason)
                        return
            await send(message)

        await self.app(scope, receive, send_or_replace)

    @staticmethod
    async def _too_many(scope: Scope, receive: Receive, send: Send, wait: float, reason: str | None) -> None:
        retry_after = str(max(1, math.ceil(wait)))
        response = error(scope, 429, "rate_limited", f"too many refused requests from this client (this one: "
                         f"{reason or 'refused'}); retry in {retry_after} s", {"Retry-After": retry_after})
        await response(scope, receive, send)
