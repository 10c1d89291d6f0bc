"""Dead letters from their durable record (`deadLetters/{id}`, schemas/dead_letters.py): list, show, replay.

The pipeline records every dead letter in Firestore before acknowledging it, and keeps the record until its event is
committed (DESIGN §3); the DLQ topic's Pub/Sub copy expires after 7 days. So everything here reads and changes the
record, never the subscription: a replay re-publishes the record's own bytes and works long after the Pub/Sub copy
is gone. The functions take a `Store` and a clock (`now_ms`), so the simulation drives them with stand-ins.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from google.api_core import exceptions
from rich.console import Console
from rich.table import Table

from schemas import DecodeError, decode_envelope, ordering_key
from schemas import dead_letters as dl
from schemas.attributes import REPLAYED_AT

# A pull waits for messages until its deadline (the deprecated return_immediately flag is not used); an empty pull
# ends in DeadlineExceeded, counted as empty. The emulator holds a pull until its deadline less 1 s, so under 1 s it
# answers at once; against the service the deadline is long enough not to cancel a pull in flight.
EMULATOR_PULL_SECONDS = 0.9
SERVICE_PULL_SECONDS = 5.0


def pull_seconds() -> float:
    return EMULATOR_PULL_SECONDS if os.environ.get("PUBSUB_EMULATOR_HOST") else SERVICE_PULL_SECONDS


def pull_once(subscriber: Any, subscription: str, max_messages: int, timeout: float | None = None) -> list[Any]:
    """One pull, not acked: what the subscription hands out now ([] when the deadline passes with nothing)."""
    try:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": max_messages},
                                   timeout=timeout if timeout is not None else pull_seconds())
    except exceptions.DeadlineExceeded:
        return []
    return list(response.received_messages)


# -- the record ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Letter:
    """One `deadLetters` document: its id and fields."""

    id: str
    fields: dict[str, Any]

    def _get(self, name: str, default: Any = "") -> Any:
        value = self.fields.get(name)
        return default if value is None else value

    @property
    def event_id(self) -> str:
        return str(self._get(dl.EVENT_ID))

    @property
    def verdict(self) -> str:
        return str(self._get(dl.VERDICT, "?"))

    @property
    def state(self) -> str:
        return str(self._get(dl.STATE, dl.OPEN))

    @property
    def source_region(self) -> str:
        return str(self._get(dl.SOURCE_REGION))

    @property
    def worker_region(self) -> str:
        return str(self._get(dl.WORKER_REGION))

    @property
    def first_failed_ms(self) -> int:
        return int(self._get(dl.FIRST_FAILED_AT, self._get(dl.FAILED_AT, 0)))

    @property
    def envelope(self) -> bytes | None:
        value = self.fields.get(dl.ENVELOPE)
        return bytes(value) if value is not None else None

    def age_s(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.first_failed_ms) / 1000)


class Store(Protocol):
    """Where the records are: Firestore (`FirestoreLetters`) or a stand-in."""

    def letters(self, states: Collection[str]) -> list[Letter]:
        """Every record in one of `states`."""
        ...

    def get(self, letter_id: str) -> Letter | None: ...

    def update(self, letter_id: str, fields: dict[str, Any], increments: dict[str, int] | None = None) -> None:
        """Set `fields` (the others kept) and add `increments` on an existing record."""
        ...


class FirestoreLetters:
    """The records in Firestore (the emulator when FIRESTORE_EMULATOR_HOST is set)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._collection = db.collection(dl.COLLECTION)

    def letters(self, states: Collection[str]) -> list[Letter]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._collection
        if set(states) != set(dl.STATES):
            query = query.where(filter=FieldFilter(dl.STATE, "in", sorted(states)))
        return [Letter(s.id, s.to_dict() or {}) for s in query.stream(timeout=60)]

    def get(self, letter_id: str) -> Letter | None:
        snap = self._collection.document(letter_id).get(timeout=30)
        return Letter(snap.id, snap.to_dict() or {}) if snap.exists else None

    def update(self, letter_id: str, fields: dict[str, Any], increments: dict[str, int] | None = None) -> None:
        from google.cloud import firestore

        changes = {**fields, **{k: firestore.Increment(v) for k, v in (increments or {}).items()}}
        self._collection.document(letter_id).update(changes, timeout=30)


@dataclass(frozen=True)
class Filter:
    """Which records an operation touches; an empty filter matches every state (replay never takes resolved)."""

    verdicts: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()
    region: str | None = None  # matches the source (receiving) or the worker region
    event_ids: frozenset[str] = frozenset()
    older_than_s: float = 0.0

    def matches(self, letter: Letter, now_ms: int) -> bool:
        if self.verdicts and letter.verdict not in self.verdicts:
            return False
        if self.states and letter.state not in self.states:
            return False
        if self.region and self.region not in (letter.source_region, letter.worker_region):
            return False
        if self.event_ids and not {letter.event_id, letter.id} & self.event_ids:
            return False
        return letter.age_s(now_ms) >= self.older_than_s


def select(store: Store, flt: Filter | None = None, *, now_ms: int, limit: int | None = None) -> list[Letter]:
    """The records matching `flt` (at most `limit`), oldest first failure first."""
    flt = flt or Filter()
    found = sorted((x for x in store.letters(flt.states or dl.STATES) if flt.matches(x, now_ms)),
                   key=lambda x: (x.first_failed_ms, x.id))
    return found[:limit] if limit is not None else found


def find(store: Store, key: str) -> Letter | None:
    """A record by its id (the eventId for any event that has a valid one) or by eventId."""
    found = store.get(key) if key and "/" not in key else None
    if found is not None:
        return found
    return next((x for x in store.letters(dl.STATES) if x.event_id == key), None)


# -- replay --------------------------------------------------------------------------------------------------------
Publish = Callable[[bytes, dict[str, str], str], str]
"""(data, attributes, ordering key) -> message id once Pub/Sub confirmed it."""


class PubSubPublish:
    """Publishes onto a topic with ordering keys, like the ingress (resumes a key after a failure)."""

    def __init__(self, topic: str, timeout: float = 60.0) -> None:
        import google.cloud.pubsub_v1 as pubsub_v1  # no py.typed: mypy resolves this form to Any

        self.topic = topic
        self._timeout = timeout
        self._client = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))

    def __call__(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str:
        try:
            return str(self._client.publish(self.topic, data, ordering_key=ordering_key, **attributes)
                       .result(timeout=self._timeout))
        except Exception:
            if ordering_key:
                self._client.resume_publish(self.topic, ordering_key)
            raise


def replay_ordering_key(letter: Letter) -> str:
    """The key the ingress gives the event's customer today (schemas.ordering_key), else none (undecodable).

    Never the key the original carried (the message's, its `orderingKey` attribute or the record's): a dead letter
    from before keys were bounded would bring back a key outside the bounded set (a thread for ever in the
    emulator)."""
    try:
        return ordering_key(decode_envelope(letter.envelope or b""))
    except (DecodeError, KeyError, TypeError):
        return ""


def republish(letter: Letter, publish: Publish, now_ms: int) -> str:
    """Publish a record's envelope bytes and original attributes, plus `replayedAt` (so the dedupe that remembered
    the failed attempt lets it through), with its original ordering key; the message id."""
    data = letter.envelope
    if data is None:
        raise ValueError(f"envelope not stored ({letter.fields.get(dl.ENVELOPE_BYTES)} bytes, over Firestore's "
                         "limit): replay its Pub/Sub copy within 7 days")
    attributes = {str(k): str(v) for k, v in (letter.fields.get(dl.ATTRIBUTES) or {}).items()}
    attributes[REPLAYED_AT] = str(now_ms)
    return publish(data, attributes, replay_ordering_key(letter))


@dataclass
class ReplayResult:
    replayed: list[Letter] = field(default_factory=list)
    failed: list[tuple[Letter, str]] = field(default_factory=list)
    dry_run: bool = False


def replay(store: Store, publish: Publish, flt: Filter | None = None, *, now_ms: int, limit: int | None = None,
           dry_run: bool = False) -> ReplayResult:
    """Re-publish matching unresolved records' bytes (with `replayedAt`) and mark them `replayed`.

    The record is marked before the publish, so the replayed event's own commit (which marks it resolved) can never
    be overwritten by this mark; a failed publish puts the previous state back. Replaying twice is safe: the
    pipeline's eventId commit makes a repeat a no-op.
    """
    flt = flt or Filter()
    result = ReplayResult(dry_run=dry_run)
    chosen = [x for x in select(store, flt, now_ms=now_ms) if x.state != dl.RESOLVED]
    chosen = chosen[:limit] if limit is not None else chosen
    if dry_run:
        result.replayed = chosen
        return result
    for letter in chosen:
        if letter.envelope is None:
            result.failed.append((letter, f"envelope not stored ({letter.fields.get(dl.ENVELOPE_BYTES)} bytes, over "
                                          "Firestore's limit): replay its Pub/Sub copy within 7 days"))
            continue
        store.update(letter.id, {dl.STATE: dl.REPLAYED, dl.REPLAYED_AT: now_ms}, {dl.REPLAYS: 1})
        try:
            republish(letter, publish, now_ms)
        except Exception as exc:
            store.update(letter.id, {dl.STATE: letter.state}, {dl.REPLAYS: -1})
            result.failed.append((letter, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        result.replayed.append(replace(letter, fields={**letter.fields, dl.STATE: dl.REPLAYED}))
    return result


# -- printing (nothing personal: no raw payload unless asked for) -------------------------------------------------
def age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def resolution(letter: Letter) -> str:
    by = letter.fields.get(dl.RESOLVED_BY) or {}
    if not by:
        return ""
    return f"{by.get('by', '?')}: {by.get('commit', '?')} ({by.get('status', '?')})"


def table(letters: Iterable[Letter], *, now_ms: int, title: str = "Dead letters") -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in ("eventId", "verdict", "state", "age", "failures", "reason", "step", "sourceRegion",
                 "first failed (UTC)", "resolved by"):
        out.add_column(name, overflow="fold" if name in ("reason", "resolved by") else "ellipsis",
                       max_width=48 if name in ("reason", "resolved by") else None,
                       no_wrap=name not in ("reason", "resolved by"))
    for x in letters:
        out.add_row(x.event_id or x.id, x.verdict, x.state, age(x.age_s(now_ms)), str(x.fields.get(dl.FAILURES, 1)),
                    str(x.fields.get(dl.REASON, "")), str(x.fields.get(dl.STEP, "")), x.source_region,
                    when(x.first_failed_ms), resolution(x))
    return out


def summary(letters: Iterable[Letter]) -> dict[str, int]:
    """Count by `verdict/state`."""
    counts: dict[str, int] = {}
    for x in letters:
        counts[f"{x.verdict}/{x.state}"] = counts.get(f"{x.verdict}/{x.state}", 0) + 1
    return dict(sorted(counts.items()))


def row(letter: Letter, now_ms: int) -> dict[str, Any]:
    """One record as a JSON-able line for `dlq list --json` (no envelope)."""
    return {"id": letter.id, "eventId": letter.event_id, "verdict": letter.verdict, "state": letter.state,
            "ageSeconds": round(letter.age_s(now_ms)), "firstFailedAt": letter.first_failed_ms,
            "failedAt": letter.fields.get(dl.FAILED_AT), "failures": letter.fields.get(dl.FAILURES),
            "reason": letter.fields.get(dl.REASON), "step": letter.fields.get(dl.STEP),
            "sourceRegion": letter.source_region, "workerRegion": letter.worker_region,
            "resolvedBy": letter.fields.get(dl.RESOLVED_BY)}


def describe(letter: Letter, *, now_ms: int, payload: bool = False) -> dict[str, Any]:
    """One record in full, made printable: the envelope decoded without its raw PayNow payload and the customer's
    e-mail, unless `payload` (the raw bytes are never printed, only their size and digest)."""
    out: dict[str, Any] = {k: v for k, v in letter.fields.items() if k != dl.ENVELOPE}
    out["id"] = letter.id
    out["age"] = age(letter.age_s(now_ms))
    for name in (dl.FIRST_FAILED_AT, dl.FAILED_AT, dl.REPLAYED_AT, dl.RESOLVED_AT):
        if isinstance(out.get(name), int):
            out[name] = f"{when(out[name])} UTC ({out[name]})"
    data = letter.envelope
    if data is None:
        out["envelope"] = None
        return out
    shown: dict[str, Any] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        envelope = decode_envelope(data, min_compatible=0)
    except DecodeError as exc:
        shown["decode"] = f"{type(exc).__name__}: {exc}"
    else:
        raw = envelope["data"].pop("rawPayload", b"")
        customer = envelope["data"].get("customer") or {}
        if not payload:
            customer.pop("email", None)
        shown["decoded"] = envelope
        if payload and raw:
            try:
                shown["rawPayload"] = json.loads(raw)
            except ValueError:
                shown["rawPayload"] = raw[:200].decode(errors="replace")
    out["envelope"] = shown
    out["replayOrderingKey"] = replay_ordering_key(letter)
    return out


def print_describe(console: Console, letter: Letter, *, payload: bool = False) -> None:
    console.print_json(json.dumps(describe(letter, now_ms=int(time.time() * 1000), payload=payload), default=str))


def unresolved(db: Any) -> dict[str, str]:
    """eventId -> verdict of every unresolved dead letter in Firestore `db`: the DLQ as the audit, the drills and
    reconcile see it (a replayed one that failed again is open again; a committed one is resolved)."""
    return {x.event_id: x.verdict for x in FirestoreLetters(db).letters(dl.UNRESOLVED) if x.event_id}
