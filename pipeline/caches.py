"""The sink's in-memory caches of Firestore reference data: the product catalog and customer -> uid mappings."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

from pipeline.ledger import Product


class ProductCatalog:
    """`products/*` cached in memory, reloaded every `refresh_seconds` (or sooner when an id is missing)."""

    MIN_RELOAD_GAP = 2.0

    def __init__(self, load: Callable[[], dict[str, Product]], refresh_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._refresh = refresh_seconds
        self._clock = clock
        self._products: dict[str, Product] = {}
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()  # the commit threads decide again after a conflict

    def products(self, *, missing: bool = False) -> dict[str, Product]:
        with self._lock:
            age = self._clock() - self._loaded_at
            if age >= self._refresh or (missing and age >= self.MIN_RELOAD_GAP):
                self._products = self._load()
                self._loaded_at = self._clock()
            return self._products


class CustomerCache:
    """customerId -> uid, remembered for `ttl` seconds; unknown customers are asked again every time."""

    def __init__(self, lookup: Callable[[str], str | None], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        # No size bound (one small entry per mapped customer); expired entries are dropped as new ones come in.
        self._cache: TTLCache[str, str] = TTLCache(maxsize=math.inf, ttl=ttl, timer=clock)

    def uid(self, customer_id: str) -> str | None:
        uid = self._cache.get(customer_id)
        if uid is None:
            uid = self._lookup(customer_id)
            if uid:
                self._cache[customer_id] = uid
        return uid
