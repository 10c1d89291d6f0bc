"""One pooled HTTP client for the local stack's own calls (metrics scrapes, Prometheus queries, health polls).

`httpx.get` builds a fresh Client for every call, and with it an SSL context loaded with certifi's CA bundle:
about 45 ms of CPU for a request that itself costs 2 ms. The status view makes ten such calls a second (four
scrapes, five Prometheus queries, the alerts), which took half a core of a 2-core machine for as long as
`make run` ran, and a drill's sampler starved its own sender. A shared client keeps the connections too.
"""
from __future__ import annotations

import atexit
import functools

import httpx


@functools.cache
def client() -> httpx.Client:
    """The process's client (httpx's Client is safe to share between threads); loopback only, so no proxies.
    Closed when the process exits, so its pooled connections are not left for the interpreter to find."""
    pooled = httpx.Client(trust_env=False)
    atexit.register(pooled.close)
    return pooled
