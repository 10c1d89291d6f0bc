"""The simulation's world: a virtual clock, in-memory Pub/Sub and Firestore stand-ins, and fault injection.

Nothing here decides anything about the ledger: the stand-ins only behave like the services the pipeline talks to,
with the semantics the pipeline relies on (ops/load/simulate.py runs the real pipeline code against them):

- Pub/Sub: per-subscription delivery with ordering keys (a key's messages in publish order, the next one only after
  the previous is acknowledged), ack deadlines (an outstanding message is redelivered when its deadline passes),
  nacks, at-least-once redelivery of acknowledged messages, and message retention (an unacknowledged message older
  than the retention is gone).
- Firestore: documents with create and update times; an atomic commit of the commit plan's writes (`Create` fails
  ALREADY_EXISTS, `ReplaceIfUnchanged` FAILED_PRECONDITION unless the version read is still there, `Increment` and
  `Upsert` merge), reserved or invalid document ids refused INVALID_ARGUMENT, TTL deletes of `webhookEvents` past
  `expiresAt` (within a day, as Firestore's TTL does), and every call through injectable faults.

Everything is driven by one seeded `random.Random`, so a seed replays the same world exactly.
"""
from __future__ import annotations

import datetime as dt
import heapq
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc

from pipeline.commit_plan import Create, Increment, ReplaceIfUnchanged, Upsert, Write

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
EPOCH_MS = 1_780_000_000_000  # virtual time 0 (2026-05-28): a fixed date, so traces never depend on the wall clock


class Clock:
    """Virtual time in epoch milliseconds; only the scheduler and the code's sleeps move it."""

    def __init__(self, start_ms: int = EPOCH_MS) -> None:
        self.start_ms = start_ms
        self.now_ms = start_ms

    def seconds(self) -> float:
        return self.now_ms / 1000

    def datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now_ms / 1000, dt.UTC)

    def sleep(self, seconds: float) -> None:
        self.now_ms += max(0, int(seconds * 1000))

    def day(self, ms: int | None = None) -> float:
        return ((self.now_ms if ms is None else ms) - self.start_ms) / DAY

    def stamp(self, ms: int | None = None) -> str:
        """`d12 03:04:05.678`: virtual day and time of day, for traces."""
        rel = (self.now_ms if ms is None else ms) - self.start_ms
        days, rest = divmod(rel, DAY)
        h, rest = divmod(rest, HOUR)
        m, rest = divmod(rest, MINUTE)
        s, ms_ = divmod(rest, SECOND)
        return f"d{days:03d} {h:02d}:{m:02d}:{s:02d}.{ms_:03d}"


class Trace:
    """What happened, one short line per notable step; the last lines are printed for a failing seed."""

    def __init__(self, clock: Clock, keep: bool = True) -> None:
        self.clock = clock
        self.lines: list[str] = []
        self.keep = keep

    def __call__(self, text: str) -> None:
        if self.keep:
            self.lines.append(f"{self.clock.stamp()} {text}")


# -- Pub/Sub ---------------------------------------------------------------------------------------------------------
@dataclass
class SimMessage:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    publish_ms: int
    seq: int
    acked: bool = False
    available_ms: int = 0
    deadline_ms: int | None = None  # outstanding until then
    ack_id: str = ""
    deliveries: int = 0


class Subscription:
    """One subscription of one topic: ordered delivery, ack deadlines, nacks, retention."""

    def __init__(self, name: str, clock: Clock, trace: Trace, *, retention_ms: int, ack_deadline_ms: int = 60 * SECOND,
                 nack_delay_ms: int = 10 * SECOND) -> None:
        self.name = name
        self.clock = clock
        self.trace = trace
        self.retention_ms = retention_ms
        self.ack_deadline_ms = ack_deadline_ms
        self.nack_delay_ms = nack_delay_ms
        self.messages: dict[str, SimMessage] = {}  # unacked, by message id, in publish order (dict order)
        self.expired: list[SimMessage] = []
        self.max_deliveries: dict[str, int] = {}  # message id -> deliveries (for the wedged-key judge)
        self.park_after: int | None = None  # a message delivered this often is parked (judged wedged), not redelivered
        self._acks = 0

    def add(self, message: SimMessage) -> None:
        self.messages[message.message_id] = SimMessage(
            message.message_id, message.data, message.attributes, message.ordering_key, message.publish_ms,
            message.seq, available_ms=message.publish_ms)

    def _expire(self) -> None:
        now = self.clock.now_ms
        gone = [m for m in self.messages.values() if now - m.publish_ms >= self.retention_ms]
        for m in gone:
            del self.messages[m.message_id]
            self.expired.append(m)
            self.trace(f"{self.name}: message {m.message_id} ({m.attributes.get('eventId')}) expired unacked "
                       f"after {self.retention_ms // DAY} days of retention")

    def next_available_ms(self) -> int | None:
        """When something could next be pulled (None: nothing): a key's first unacked message decides for the key."""
        best = None
        keys: set[str] = set()
        for m in self.messages.values():
            if m.ordering_key:
                if m.ordering_key in keys:
                    continue
                keys.add(m.ordering_key)
            if self.park_after is not None and m.deliveries >= self.park_after:
                continue
            at = m.deadline_ms if m.deadline_ms is not None else m.available_ms
            best = at if best is None else min(best, at)
        return best

    def pull(self, max_messages: int) -> list[SimMessage]:
        """Deliverable messages: per ordering key in publish order, a key blocked while one of its is outstanding
        or waiting for its redelivery."""
        self._expire()
        now = self.clock.now_ms
        out: list[SimMessage] = []
        blocked: set[str] = set()
        for m in self.messages.values():
            if m.deadline_ms is not None and m.deadline_ms <= now:
                m.deadline_ms = None  # its ack deadline passed: redelivered
            key = m.ordering_key
            if key and key in blocked:
                continue
            if m.deadline_ms is not None or m.available_ms > now or (
                    self.park_after is not None and m.deliveries >= self.park_after):
                if key:
                    blocked.add(key)
                continue
            if len(out) >= max_messages:
                break
            m.deliveries += 1
            self.max_deliveries[m.message_id] = m.deliveries
            self._acks += 1
            m.ack_id = f"{m.message_id}#{self._acks}"
            m.deadline_ms = now + self.ack_deadline_ms
            out.append(m)
        return out

    def ack(self, message: SimMessage, ack_id: str) -> bool:
        current = self.messages.get(message.message_id)
        if current is None or current.ack_id != ack_id or current.deadline_ms is None:
            return False  # a stale ack (its deadline passed, redelivered since): ignored, as Pub/Sub may
        del self.messages[message.message_id]
        return True

    def nack(self, message: SimMessage, ack_id: str) -> None:
        current = self.messages.get(message.message_id)
        if current is not None and current.ack_id == ack_id:
            current.deadline_ms = None
            current.available_ms = self.clock.now_ms + self.nack_delay_ms

    def redeliver(self, message: SimMessage) -> None:
        """At-least-once: an acknowledged message comes back (its ack was lost)."""
        if message.message_id not in self.messages:
            self.add(message)
            self.messages[message.message_id].available_ms = self.clock.now_ms


class Topic:
    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.subscriptions: list[Subscription] = []
        self.published: list[SimMessage] = []
        self._seq = 0

    def publish(self, data: bytes, attributes: Mapping[str, str], ordering_key: str = "") -> SimMessage:
        self._seq += 1
        message = SimMessage(f"{self.name}-{self._seq}", data, dict(attributes), ordering_key, self.clock.now_ms,
                             self._seq)
        self.published.append(message)
        for sub in self.subscriptions:
            sub.add(message)
        return message


# -- Firestore -------------------------------------------------------------------------------------------------------
class _Time:
    """A document's update time as the sink reads it (`snap.update_time.timestamp_pb()`): an opaque token."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def timestamp_pb(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Time) and other.value == self.value

    def __hash__(self) -> int:
        return self.value


class Snap:
    """A document snapshot with the attributes the pipeline reads."""

    __slots__ = ("_fields", "create_time", "exists", "path", "update_time")

    def __init__(self, path: str, fields: dict[str, Any] | None, create_time: int = 0, update_time: int = 0) -> None:
        self.path = path
        self.exists = fields is not None
        self._fields = fields
        self.create_time = _Time(create_time) if fields is not None else None
        self.update_time = _Time(update_time) if fields is not None else None

    @property
    def id(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def reference(self) -> Snap:
        return self

    def to_dict(self) -> dict[str, Any] | None:
        return dict(self._fields) if self._fields is not None else None

    def get(self, name: str) -> Any:
        return (self._fields or {}).get(name)


_ID = re.compile(r"[^/]{1,1500}")
_RESERVED = re.compile(r"__.*__")
MAX_WRITES = 500


def check_path(path: str) -> None:
    """Firestore's rules for a document path: an even number of non-empty segments, none `.`, `..` or `__.*__`."""
    parts = path.split("/")
    if len(parts) % 2 or any(not _ID.fullmatch(p) or p in (".", "..") or _RESERVED.fullmatch(p) for p in parts):
        raise gexc.InvalidArgument(f"invalid document path {path!r}")


Fault = Callable[[str, list[str]], None]
"""Called before each call with (kind: get/commit, paths); may raise a google.api_core exception."""


class Firestore:
    """The database: documents by path with (fields, create time, update time)."""

    def __init__(self, clock: Clock, trace: Trace) -> None:
        self.clock = clock
        self.trace = trace
        self.docs: dict[str, tuple[dict[str, Any], int, int]] = {}
        self._top: dict[str, dict[str, None]] = {}  # top-level collection -> its documents' paths, in creation order
        self.ever_events: dict[str, int] = {}  # webhookEvents ids ever created -> commit time (outlives the TTL)
        self.before: Fault | None = None
        self.after_commit: Fault | None = None
        self._tick = 0
        self.commits = 0

    def _commit_time(self) -> int:
        """Microseconds; strictly increasing, so every commit gives its documents a new update time."""
        self._tick += 1
        return self.clock.now_ms * 1000 + self._tick % 1000

    def get(self, path: str) -> Snap:
        found = self.docs.get(path)
        return Snap(path, found[0], found[1], found[2]) if found else Snap(path, None)

    def get_all(self, paths: Iterable[str]) -> dict[str, Snap]:
        paths = list(paths)
        for p in paths:
            check_path(p)
        if self.before is not None:
            self.before("get", paths)
        return {p: self.get(p) for p in paths}

    def collection(self, name: str) -> list[Snap]:
        docs = self.docs
        return [Snap(p, *docs[p]) for p in self._top.get(name, ())]

    def _put(self, path: str, doc: tuple[dict[str, Any], int, int]) -> None:
        if path not in self.docs:
            parts = path.split("/", 2)
            if len(parts) == 2:
                self._top.setdefault(parts[0], {})[path] = None
        self.docs[path] = doc

    def commit(self, writes: list[Write]) -> None:
        paths = [w.path for w in writes]
        if len(writes) > MAX_WRITES:
            raise gexc.InvalidArgument(f"a commit of {len(writes)} writes (at most {MAX_WRITES})")
        for p in paths:
            check_path(p)
        if self.before is not None:
            self.before("commit", paths)
        self._apply(writes)
        self.commits += 1
        if self.after_commit is not None:
            self.after_commit("commit", paths)

    def _apply(self, writes: list[Write]) -> None:
        # Preconditions first, on the state before the commit: all or nothing.
        for w in writes:
            current = self.docs.get(w.path)
            if isinstance(w, Create) and current is not None:
                raise gexc.AlreadyExists(f"Document already exists: {w.path}")
            if isinstance(w, ReplaceIfUnchanged):
                if w.update_time is None:
                    if current is not None:
                        raise gexc.AlreadyExists(f"Document already exists: {w.path}")
                elif current is None or current[2] != w.update_time:
                    raise gexc.FailedPrecondition(f"the stored version does not match the required base version: "
                                                  f"{w.path}")
        now = self._commit_time()
        now_ms = self.clock.now_ms
        for w in writes:
            current = self.docs.get(w.path)
            created = current[1] if current else now
            if isinstance(w, Create | ReplaceIfUnchanged):
                fields = dict(w.fields)
                for name in w.server_time:
                    fields[name] = now_ms
                self._put(w.path, (fields, created, now))
                if w.path.startswith("webhookEvents/"):
                    self.ever_events.setdefault(w.path.split("/", 1)[1], now_ms)
            elif isinstance(w, Increment):
                fields = dict(current[0]) if current else {}
                for name, delta in w.increments.items():
                    fields[name] = int(fields.get(name) or 0) + delta
                for name in w.server_time:
                    fields[name] = now_ms
                self._put(w.path, (fields, created, now))
            elif isinstance(w, Upsert):
                fields = dict(current[0]) if current else {}
                fields.update(w.fields)
                for name, delta in w.increments.items():
                    fields[name] = int(fields.get(name) or 0) + delta
                for name, low in w.minimums.items():
                    fields[name] = low if fields.get(name) is None else min(int(fields[name]), low)
                self._put(w.path, (fields, created, now))
            else:  # pragma: no cover - the Write union is closed
                raise TypeError(type(w).__name__)

    def touch(self, path: str) -> None:
        """Another writer rewrites a document unchanged: a new update time (a concurrent writer's effect)."""
        current = self.docs.get(path)
        if current is not None:
            self.docs[path] = (current[0], current[1], self._commit_time())

    def delete(self, path: str) -> None:
        self.docs.pop(path, None)
        self._top.get(path.split("/", 1)[0], {}).pop(path, None)

    def ttl_sweep(self, rng: random.Random) -> list[str]:
        """Delete `webhookEvents` past `expiresAt`, each within a day of expiring (Firestore's TTL is not exact)."""
        now = self.clock.datetime()
        gone = []
        for path in list(self._top.get("webhookEvents", ())):
            expires = self.docs[path][0].get("expiresAt")
            if isinstance(expires, dt.datetime) and expires <= now and rng.random() < 0.7:
                self.delete(path)
                gone.append(path)
        return gone


class Client:
    """The few `firestore.Client` calls the account lookup makes: `collection(c).document(d).get()`."""

    def __init__(self, db: Firestore) -> None:
        self._db = db

    def collection(self, name: str) -> _Collection:
        return _Collection(self._db, name)

    def close(self) -> None:
        pass


@dataclass
class _Collection:
    db: Firestore
    name: str

    def document(self, doc_id: str) -> _Document:
        return _Document(self.db, f"{self.name}/{doc_id}")


@dataclass
class _Document:
    db: Firestore
    path: str

    def get(self, **_: Any) -> Snap:
        return self.db.get_all([self.path])[self.path]


# -- the scheduler ---------------------------------------------------------------------------------------------------
@dataclass(order=True)
class _Job:
    at_ms: int
    seq: int
    name: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)


class Scheduler:
    """Jobs at virtual times, run in (time, insertion) order; the clock jumps to each."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._jobs: list[_Job] = []
        self._seq = 0

    def at(self, at_ms: int, name: str, run: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._jobs, _Job(max(at_ms, self.clock.now_ms), self._seq, name, run))

    def next_ms(self) -> int | None:
        return self._jobs[0].at_ms if self._jobs else None

    def run_next(self) -> str:
        job = heapq.heappop(self._jobs)
        self.clock.now_ms = max(self.clock.now_ms, job.at_ms)
        job.run()
        return job.name

    def __len__(self) -> int:
        return len(self._jobs)
