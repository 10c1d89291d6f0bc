"""A small in-process TTL cache of recently published eventIds, so PayNow's re-sends are not published again."""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


class RecentEvents:
    """eventId -> body digest for `ttl` seconds, at most `max_entries`, oldest evicted first.

    Only remember an event after its publish was confirmed. A known eventId with a different body is not a
    duplicate (the pipeline decides what it means), so the digest is part of the match.
    """

    def __init__(self, ttl: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @staticmethod
    def digest(body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=16).digest()

    def seen(self, event_id: str, body: bytes) -> bool:
        entry = self._entries.get(event_id)
        if entry is None:
            return False
        expires, digest = entry
        if expires <= self._clock():
            del self._entries[event_id]
            return False
        return digest == self.digest(body)

    def remember(self, event_id: str, body: bytes) -> None:
        if self._ttl <= 0:
            return
        now = self._clock()
        self._entries[event_id] = (now + self._ttl, self.digest(body))
        self._entries.move_to_end(event_id)
        while self._entries:
            oldest, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self._max:
                break
            del self._entries[oldest]

    def __len__(self) -> int:
        return len(self._entries)
