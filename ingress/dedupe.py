"""A small in-process TTL cache of recently published eventIds, so PayNow's re-sends are not published again."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from cachetools import TTLCache


class RecentEvents:
    """eventId -> body digest for `ttl` seconds, at most `max_entries` (the least recently used goes first).

    Only remember an event after its publish was confirmed. A known eventId with a different body is not a
    duplicate (the pipeline decides what it means), so the digest is part of the match.
    """

    def __init__(self, ttl: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=max(ttl, 0), timer=clock)

    @staticmethod
    def digest(body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=16).digest()

    def seen(self, event_id: str, body: bytes) -> bool:
        digest = self._entries.get(event_id)
        return digest is not None and digest == self.digest(body)

    def remember(self, event_id: str, body: bytes) -> None:
        if self._ttl > 0:
            self._entries[event_id] = self.digest(body)

    def __len__(self) -> int:
        return len(self._entries)
