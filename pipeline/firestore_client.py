"""Firestore connection settings, error classes and bounded retries with exponential backoff."""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from pipeline.observability import log

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.Aborted, gexc.InternalServerError,
    gexc.ResourceExhausted, gexc.RetryError, gexc.GatewayTimeout, gexc.Unknown, ConnectionError, TimeoutError,
)
CONFLICT: tuple[type[BaseException], ...] = (gexc.Conflict, gexc.FailedPrecondition)  # AlreadyExists is a Conflict
RPC_TIMEOUT = 10.0
MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class FirestoreConfig:
    project: str
    database: str = "(default)"
    region: str = "unknown"
    max_write_attempts: int = 5
    product_refresh_seconds: int = 60
    event_ttl_days: int = 30

    def client(self) -> firestore.Client:
        """A client for this project and database (FIRESTORE_EMULATOR_HOST selects the emulator)."""
        return firestore.Client(project=self.project, database=self.database)


class WriteFailed(RuntimeError):
    """A Firestore call still failing after the configured attempts."""


def backoff(attempt: int, base: float = 0.2) -> float:
    """Seconds to wait before retry number `attempt` (1-based): exponential, capped, with jitter."""
    return min(MAX_BACKOFF, base * 2 ** (attempt - 1)) * random.uniform(0.75, 1.0)


def with_retries(call: Callable[[], T], attempts: int, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `call`, retrying transient errors up to `attempts` times in all; raise WriteFailed after that."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TRANSIENT as exc:
            if attempt == attempts:
                raise WriteFailed(f"{type(exc).__name__} after {attempts} attempts: {str(exc)[:300]}") from exc
            wait = backoff(attempt)
            log(logging.WARNING, "firestore call failed, retrying", attempt=attempt, waitSeconds=round(wait, 2),
                error=f"{type(exc).__name__}: {str(exc)[:200]}")
            sleep(wait)
    raise AssertionError("unreachable")
