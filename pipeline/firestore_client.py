"""Firestore connection settings, error classes, and calls retried with backoff under an adaptive throttler."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler
from apache_beam.utils import retry
from google.api_core import exceptions as gexc
from google.cloud import firestore

from pipeline.observability import RegionMetrics, log

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.Aborted, gexc.InternalServerError,
    gexc.ResourceExhausted, gexc.RetryError, gexc.GatewayTimeout, gexc.Unknown, ConnectionError, TimeoutError,
)
CONFLICT: tuple[type[BaseException], ...] = (gexc.Conflict, gexc.FailedPrecondition)  # AlreadyExists is a Conflict
RPC_TIMEOUT = 10.0
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0
# Beam's Datastore sink throttles over 120 s. Throttled attempts count as requests, so with a sink's few RPCs a
# long window keeps throttling long after a thaw (simulated, 90 s outage: +157 s with a 30 s window, +15 s with
# 15 s and a 2 s cap per call); shorter than the 10 s RPC deadline it would never see two failures of a frozen
# backend. A call throttled for MAX_THROTTLE_PER_CALL goes out anyway, as a probe.
THROTTLE_WINDOW_MS = 15_000
THROTTLE_BUCKET_MS = 1_000
OVERLOAD_RATIO = 1.25
THROTTLE_DELAY = 1.0
MAX_THROTTLE_PER_CALL = 2.0


@dataclass(frozen=True)
class FirestoreConfig:
    project: str
    database: str = "(default)"
    region: str = "unknown"
    max_write_attempts: int = 5
    product_refresh_seconds: int = 60
    event_ttl_days: int = 30
    # True with the acking read: a transient fault still failing after the attempts is released to Pub/Sub for
    # redelivery. False (native read, Dataflow): it is raised, so the runner retries the bundle from its checkpoint.
    release_transient: bool = False

    def client(self) -> firestore.Client:
        """A client for this project and database (FIRESTORE_EMULATOR_HOST selects the emulator)."""
        return firestore.Client(project=self.project, database=self.database)


class Unavailable(RuntimeError):
    """Firestore still failing transiently (unavailable, deadline, contention) after the attempts: release the
    message for redelivery or let the runner retry; never a dead letter (DESIGN §3)."""


class WriteFailed(RuntimeError):
    """Firestore refused the call for a reason retrying cannot fix (InvalidArgument, PermissionDenied, ...)."""


def backoff(attempt: int, base: float = FIRST_BACKOFF) -> float:
    """Seconds to wait before retry number `attempt` (1-based): exponential, capped, with jitter."""
    return min(MAX_BACKOFF, base * 2 ** (attempt - 1)) * random.uniform(0.75, 1.0)


class _Sleeper:
    """The `clock` apache_beam.utils.retry sleeps on."""

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self.sleep = sleep


class _SharedThrottler:
    """One AdaptiveThrottler per process (all steps call the same backend), safe across the commit threads."""

    def __init__(self) -> None:
        self._throttler = AdaptiveThrottler(THROTTLE_WINDOW_MS, THROTTLE_BUCKET_MS, OVERLOAD_RATIO)
        self._lock = threading.Lock()

    def throttle_request(self, now_ms: float) -> bool:
        with self._lock:
            return bool(self._throttler.throttle_request(now_ms))

    def successful_request(self, now_ms: float) -> None:
        with self._lock:
            self._throttler.successful_request(now_ms)


_throttler = _SharedThrottler()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


class FirestoreRpc:
    """Firestore calls the way Beam's Datastore sink makes them: adaptive client-side throttling, exponential
    backoff (`apache_beam.utils.retry`) on transient errors, and counters of successes, errors and throttled time.

    A call raises Unavailable when transient errors outlast `attempts`, WriteFailed on a permanent refusal, and
    passes conflicts (precondition failures) through for the caller to resolve.
    """

    def __init__(self, region: str, attempts: int, sleep: Callable[[float], None] = time.sleep,
                 throttler: Any = None) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self._metrics = RegionMetrics(region)
        self._attempts = attempts
        self._sleep = sleep
        self._throttler = throttler or _throttler

    def _once(self, call: Callable[[], T]) -> T:
        waited = 0.0
        while waited < MAX_THROTTLE_PER_CALL and self._throttler.throttle_request(time.time() * 1000):
            self._sleep(THROTTLE_DELAY)
            self._metrics.throttled(THROTTLE_DELAY)
            waited += THROTTLE_DELAY
        started = time.time()
        try:
            result = call()
        except TRANSIENT:
            self._metrics.rpc(success=False)
            raise
        self._metrics.rpc(success=True)
        self._throttler.successful_request(started * 1000)
        return result

    @staticmethod
    def _log_retry(_fmt: str, wait: float, _name: str, error: str, *_: Any) -> None:
        log(logging.WARNING, "firestore call failed, retrying", waitSeconds=round(wait, 2), error=error.strip()[:200])

    def call(self, call: Callable[[], T]) -> T:
        attempt = retry.with_exponential_backoff(
            num_retries=self._attempts - 1, initial_delay_secs=FIRST_BACKOFF, max_delay_secs=MAX_BACKOFF,
            retry_filter=_is_transient, clock=_Sleeper(self._sleep), logger=self._log_retry)(self._once)
        try:
            return attempt(call)
        except TRANSIENT as exc:
            raise Unavailable(f"{type(exc).__name__} after {self._attempts} attempts: {str(exc)[:300]}") from exc
        except CONFLICT:
            raise
        except gexc.GoogleAPICallError as exc:  # InvalidArgument, PermissionDenied, NotFound, ...: permanent
            raise WriteFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def with_retries(call: Callable[[], T], attempts: int, sleep: Callable[[float], None] = time.sleep,
                 region: str = "unknown") -> T:
    """Run `call` through a FirestoreRpc (see there for what it raises)."""
    return FirestoreRpc(region, attempts, sleep).call(call)
