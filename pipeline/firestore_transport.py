"""The Firestore transport: settings, client, RPCs retried with backoff under an adaptive throttler, their
counters, and the raw `Write` protos a commit plan becomes."""
from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import grpc
from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler
from apache_beam.utils import retry
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.types import common, document, write
from google.cloud.firestore_v1.types import firestore as firestore_types

from pipeline.commit_plan import Create, ReplaceIfUnchanged, Upsert, Write
from pipeline.ledger import Product
from pipeline.observability import RegionMetrics, log

T = TypeVar("T")

TRANSIENT, CONFLICT, PERMANENT = "transient", "conflict", "permanent"
STATUS_CLASS: dict[grpc.StatusCode, str] = {
    # Retried with backoff, then released for redelivery; never a dead letter (DESIGN §3). The same set the
    # Firestore SDKs retry (firebase-js-sdk remote/rpc_error.ts `isPermanentError`), plus ABORTED: a plain
    # commit is aborted only by contention, which a later attempt resolves.
    grpc.StatusCode.CANCELLED: TRANSIENT,
    grpc.StatusCode.UNKNOWN: TRANSIENT,
    grpc.StatusCode.DEADLINE_EXCEEDED: TRANSIENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TRANSIENT,
    grpc.StatusCode.ABORTED: TRANSIENT,
    grpc.StatusCode.INTERNAL: TRANSIENT,
    grpc.StatusCode.UNAVAILABLE: TRANSIENT,
    grpc.StatusCode.UNAUTHENTICATED: TRANSIENT,  # an expired token: the client refreshes it on the next call
    # A precondition of the commit plan failed (create of an existing doc, aggregate changed since read):
    # re-read and decide again (LedgerWriter._apply_one).
    grpc.StatusCode.ALREADY_EXISTS: CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: CONFLICT,
    # Retrying cannot fix it: this event is dead-lettered `write_failed`, alone.
    grpc.StatusCode.INVALID_ARGUMENT: PERMANENT,
    grpc.StatusCode.NOT_FOUND: PERMANENT,  # the database (a precondition on a deleted doc is FAILED_PRECONDITION)
    grpc.StatusCode.PERMISSION_DENIED: PERMANENT,
    grpc.StatusCode.OUT_OF_RANGE: PERMANENT,
    grpc.StatusCode.UNIMPLEMENTED: PERMANENT,
    grpc.StatusCode.DATA_LOSS: PERMANENT,
}
"""Every status code a Firestore RPC can fail with, and what it means for the event (tests check it code by code)."""
_NETWORK: tuple[type[BaseException], ...] = (gexc.RetryError, ConnectionError, TimeoutError)


def classify(exc: BaseException) -> str | None:
    """TRANSIENT, CONFLICT or PERMANENT for an error of a Firestore call; None for anything else (a bug: it
    propagates to the sink, which isolates it to its event)."""
    if isinstance(exc, gexc.GoogleAPICallError):
        code = exc.grpc_status_code
        if code is None:  # an HTTP-only error (a proxy's 502/503/504, 429): transient; other 4xx are ours
            return TRANSIENT if exc.code is not None and (exc.code >= 500 or exc.code == 429) else PERMANENT
        return STATUS_CLASS.get(code, PERMANENT)
    return TRANSIENT if isinstance(exc, _NETWORK) else None


CONFLICTS: tuple[type[BaseException], ...] = tuple(
    gexc.exception_class_for_grpc_status(code) for code, kind in STATUS_CLASS.items() if kind == CONFLICT)
"""The exception classes of the CONFLICT codes, for `except` clauses."""


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
READ_CHUNK = 300


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
    return min(MAX_BACKOFF, base * 2.0 ** (attempt - 1)) * random.uniform(0.75, 1.0)


class _Sleeper:
    """The `clock` apache_beam.utils.retry sleeps on."""

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self.sleep = sleep


class _SharedThrottler:
    """One AdaptiveThrottler per process (all steps call the same backend), safe across the commit threads."""

    def __init__(self) -> None:
        self._throttler = AdaptiveThrottler(
            THROTTLE_WINDOW_MS, THROTTLE_BUCKET_MS, OVERLOAD_RATIO)
        self._lock = threading.Lock()

    def throttle_request(self, now_ms: float) -> bool:
        with self._lock:
            return bool(self._throttler.throttle_request(now_ms))

    def successful_request(self, now_ms: float) -> None:
        with self._lock:
            self._throttler.successful_request(now_ms)


_throttler = _SharedThrottler()


def _is_transient(exc: BaseException) -> bool:
    return classify(exc) == TRANSIENT


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
        except Exception as exc:
            if _is_transient(exc):
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
            result: T = attempt(call)
            return result
        except Exception as exc:
            kind = classify(exc)
            if kind == TRANSIENT:
                raise Unavailable(f"{type(exc).__name__} after {self._attempts} attempts: {str(exc)[:300]}") from exc
            if kind == PERMANENT:
                raise WriteFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            raise  # a conflict, for the caller to resolve; or a bug, for the sink to isolate


_Write = write.Write.pb()
_Document = document.Document.pb()
_Value = document.Value.pb()
_Precondition = common.Precondition.pb()
_Mask = common.DocumentMask.pb()
_Transform = write.DocumentTransform.FieldTransform.pb()
_CommitRequest = firestore_types.CommitRequest.pb()
_REQUEST_TIME = write.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME


def _set(target: Any, value: Any) -> None:
    """Fill a Value proto from str / bool / int / None / datetime / list / dict."""
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, dt.datetime):
        target.timestamp_value.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    elif isinstance(value, list):
        array = target.array_value
        array.SetInParent()
        for item in value:
            _set(array.values.add(), item)
    elif isinstance(value, Mapping):
        fields = target.map_value
        fields.SetInParent()
        for key, item in value.items():
            _set(fields.fields[key], item)
    else:
        raise TypeError(f"no Firestore encoding for {type(value).__name__}")


def _whole(precondition: Any, name: str, fields: Mapping[str, Any], server_time: tuple[str, ...]) -> Any:
    """Write `name` whole under `precondition`; `server_time` fields get the commit time."""
    pb = _Write(current_document=precondition)
    pb.update.name = name
    for key, value in fields.items():
        _set(pb.update.fields[key], value)
    for field in server_time:
        pb.update_transforms.append(_Transform(field_path=field, set_to_server_value=_REQUEST_TIME))
    return pb


def _create(name: str, fields: Mapping[str, Any], server_time: tuple[str, ...] = ()) -> Any:
    """Create `name` with `fields` (fails with AlreadyExists if it exists); `server_time` fields get the commit time."""
    return _whole(_Precondition(exists=False), name, fields, server_time)


def _replace_if_unchanged(name: str, fields: Mapping[str, Any], update_time: Any | None,
                         server_time: tuple[str, ...] = ()) -> Any:
    """Write `name` whole, only if it is still the version read: its `update_time` (a Timestamp proto), or
    absent when `update_time` is None (fails with FailedPrecondition / AlreadyExists otherwise)."""
    if update_time is None:
        return _create(name, fields, server_time)
    return _whole(_Precondition(update_time=update_time), name, fields, server_time)


def _increment(name: str, increments: Mapping[str, int], server_time: tuple[str, ...] = ()) -> Any:
    """Upsert `name` changing only the given counters (by Increment) and server-time fields."""
    return _upsert(name, {}, increments, {}, server_time)


def _upsert(name: str, fields: Mapping[str, Any], increments: Mapping[str, int], minimums: Mapping[str, int],
            server_time: tuple[str, ...] = ()) -> Any:
    """Create or update `name` setting only `fields`, adding `increments`, lowering `minimums` (no precondition)."""
    pb = _Write(update=_Document(name=name), update_mask=_Mask(field_paths=list(fields)))
    for key, value in fields.items():
        _set(pb.update.fields[key], value)
    for field, delta in increments.items():
        pb.update_transforms.append(_Transform(field_path=field, increment=_Value(integer_value=delta)))
    for field, low in minimums.items():
        pb.update_transforms.append(_Transform(field_path=field, minimum=_Value(integer_value=low)))
    for field in server_time:
        pb.update_transforms.append(_Transform(field_path=field, set_to_server_value=_REQUEST_TIME))
    return pb


def _commit_request(database: str, writes: list[Any]) -> firestore_types.CommitRequest:
    """A CommitRequest wrapping the raw writes without copying them."""
    request: firestore_types.CommitRequest = firestore_types.CommitRequest.wrap(
        _CommitRequest(database=database, writes=writes))
    return request


def to_proto(root: str, planned: Write) -> Any:
    """The raw `Write` proto of one planned write; `root` is `projects/P/databases/D/documents`."""
    name = f"{root}/{planned.path}"
    if isinstance(planned, Create):
        return _create(name, planned.fields, planned.server_time)
    if isinstance(planned, ReplaceIfUnchanged):
        return _replace_if_unchanged(name, planned.fields, planned.update_time, planned.server_time)
    if isinstance(planned, Upsert):
        return _upsert(name, planned.fields, planned.increments, planned.minimums)
    return _increment(name, planned.increments, planned.server_time)


def load_products(client: firestore.Client) -> dict[str, Product]:
    """Every valid `products/{id}` document; an invalid one is logged and left out."""
    products = {}
    for snap in client.collection("products").stream(timeout=30):
        try:
            products[snap.id] = Product.from_doc(snap.to_dict() or {})
        except ValueError as exc:
            log(logging.WARNING, "invalid product document ignored", productId=snap.id, error=str(exc))
    return products


class FirestoreTransport:
    """One client's reads and commits, each through a FirestoreRpc (see there for what they raise)."""

    def __init__(self, client: firestore.Client, config: FirestoreConfig,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._config = config
        self._rpc = FirestoreRpc(config.region, config.max_write_attempts, sleep)
        self._database = f"projects/{config.project}/databases/{config.database}"

    def get_all(self, paths: list[str]) -> dict[str, Any]:
        """Snapshots by path, read in chunks (one RPC per chunk), with transient errors retried."""
        found: dict[str, Any] = {}
        for start in range(0, len(paths), READ_CHUNK):
            refs = [self._client.document(p) for p in paths[start:start + READ_CHUNK]]
            snaps = self._rpc.call(partial(self._read, refs))
            found.update({s.reference.path: s for s in snaps})
        return found

    def _read(self, refs: list[Any]) -> list[Any]:
        # retry=None: our own bounded, logged retries, not the client's silent ones
        return list(self._client.get_all(refs, timeout=RPC_TIMEOUT, retry=None))

    def products(self) -> dict[str, Product]:
        return self._rpc.call(lambda: load_products(self._client))

    def commit(self, writes: Iterable[Write]) -> None:
        """One atomic commit of the planned writes (conflicts raise for the caller to resolve)."""
        root = f"{self._database}/documents"
        protos = [to_proto(root, w) for w in writes]
        self._rpc.call(lambda: self._send(protos))

    def _send(self, writes: list[Any]) -> None:
        # The GAPIC call the client's WriteBatch makes, with the client's routing and emulator metadata.
        self._client._firestore_api.commit(request=_commit_request(self._database, writes),
                                           metadata=self._client._rpc_metadata, timeout=RPC_TIMEOUT, retry=None)
