"""Per-client token bucket (429 + Retry-After); X-Forwarded-For counts only when a trusted proxy sent it."""
from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Collection, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from ingress.responses import error
from ingress.settings import IPNetwork


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the right-most untrusted
    X-Forwarded-For entry (entries left of it were written by the client and can be forged)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _is_trusted(peer, trusted):
        return str(peer)
    forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop[:64]
    return hops[0][:64] if hops else str(peer)


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in trusted)


class TokenBucket:
    """`burst` tokens per client, refilled at `per_minute` / 60 per second; per_minute 0 turns limiting off."""

    def __init__(self, burst: int, per_minute: int, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_clients:
                self._forget_full(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop clients whose bucket has refilled (they are indistinguishable from new ones)."""
        refill = self.burst / self.rate
        self._buckets = {c: (t, last) for c, (t, last) in self._buckets.items() if now - last < refill}


class RateLimitMiddleware:
    """Answers 429 with Retry-After to a client over its token bucket on `paths`."""

    def __init__(self, app: ASGIApp, *, bucket: TokenBucket, trusted_proxies: Sequence[IPNetwork],
                 paths: Collection[str]) -> None:
        self.app = app
        self.bucket = bucket
        self.trusted = tuple(trusted_proxies)
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        wait = self.bucket.take(client_address(scope, self.trusted))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        response = error(scope, 429, "rate_limited", f"too many requests from this client; retry in {retry_after} s",
                         {"Retry-After": retry_after})
        await response(scope, receive, send)
