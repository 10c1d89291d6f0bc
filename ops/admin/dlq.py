"""Inspect and replay the dead-letter queue: pull without consuming, filter, re-publish, ack only what was replayed."""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1  # the package has no py.typed: mypy resolves this form to Any
from google.api_core import exceptions
from rich.console import Console
from rich.table import Table

from schemas import DecodeError, decode_dlq_record, decode_envelope, ordering_key
from schemas.attributes import REPLAYED_AT

PULL_BATCH = 500
# A pull waits for messages until its deadline (the deprecated return_immediately flag is not used); an empty pull
# ends in DeadlineExceeded, counted as empty. Pub/Sub answers as soon as it has messages, and a pull cancelled at its
# deadline may still lease some, so against the service the deadline is long enough not to cancel a pull in flight.
# The emulator holds a pull until its deadline less 1 s, so under 1 s it answers at once.
EMULATOR_PULL_SECONDS = 0.9
SERVICE_PULL_SECONDS = 5.0


def pull_seconds() -> float:
    return EMULATOR_PULL_SECONDS if os.environ.get("PUBSUB_EMULATOR_HOST") else SERVICE_PULL_SECONDS
ACK_BATCH = 500


@dataclass
class DeadLetter:
    """One DLQ message: its Pub/Sub identity, attributes and decoded record (or why it does not decode)."""

    ack_id: str
    message_id: str
    published: dt.datetime
    attributes: dict[str, str]
    record: dict[str, Any] | None
    error: str | None = None

    def _field(self, name: str) -> str:
        if self.record is not None and self.record.get(name) is not None:
            return str(self.record[name])
        return self.attributes.get(name, "")

    @property
    def event_id(self) -> str:
        """The record's eventId, else the DLQ message's attribute, else the original message's attribute."""
        if found := self._field("eventId"):
            return found
        original = (self.record or {}).get("originalAttributes") or {}
        return str(original.get("eventId", ""))

    @property
    def verdict(self) -> str:
        return self._field("verdict") or "?"

    @property
    def source_region(self) -> str:
        return self._field("sourceRegion")

    @property
    def worker_region(self) -> str:
        return self._field("workerRegion")

    @property
    def failed_at_ms(self) -> int:
        if self.record is not None:
            return int(self.record["failedAt"])
        return int(self.published.timestamp() * 1000)


@dataclass(frozen=True)
class Filter:
    """Which DLQ messages an operation touches; an empty filter matches everything."""

    verdicts: frozenset[str] = frozenset()
    region: str | None = None  # matches the source (receiving) or the worker region
    event_ids: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter) -> bool:
        if self.verdicts and letter.verdict not in self.verdicts:
            return False
        if self.region and self.region not in (letter.source_region, letter.worker_region):
            return False
        return not (self.event_ids and letter.event_id not in self.event_ids)


def _decode(message: Any) -> DeadLetter:
    received = message.message
    attributes = dict(received.attributes)
    published = received.publish_time
    if not isinstance(published, dt.datetime):
        published = dt.datetime.now(dt.UTC)
    try:
        record: dict[str, Any] | None = decode_dlq_record(bytes(received.data))
        error = None
    except DecodeError as exc:
        record, error = None, str(exc)
    return DeadLetter(message.ack_id, received.message_id, published, attributes, record, error)


def pull_once(subscriber: pubsub_v1.SubscriberClient, subscription: str, max_messages: int,
              timeout: float | None = None) -> list[Any]:
    """One pull, not acked: what the subscription hands out now ([] when the deadline passes with nothing)."""
    try:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": max_messages},
                                   timeout=timeout if timeout is not None else pull_seconds())
    except exceptions.DeadlineExceeded:
        return []
    return list(response.received_messages)


def peek(subscriber: pubsub_v1.SubscriberClient, subscription: str, *, empty_pulls: int = 2,
         timeout: float | None = None) -> list[DeadLetter]:
    """Pull every message currently in the subscription without acking (hold them; `release` or `ack` after).

    Stops after `empty_pulls` consecutive empty pulls (the service may answer empty while messages exist).
    """
    letters: list[DeadLetter] = []
    empties = 0
    while empties < empty_pulls:
        received = pull_once(subscriber, subscription, PULL_BATCH, timeout)
        if received:
            empties = 0
            letters.extend(_decode(m) for m in received)
        else:
            empties += 1
            if empties < empty_pulls:
                time.sleep(0.1)
    return letters


def _chunks(ack_ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ack_ids), ACK_BATCH):
        yield ack_ids[i:i + ACK_BATCH]


def release(subscriber: pubsub_v1.SubscriberClient, subscription: str, letters: Iterable[DeadLetter]) -> None:
    """Nack (ack deadline 0): the messages stay in the DLQ and are immediately deliverable again."""
    for chunk in _chunks([letter.ack_id for letter in letters]):
        subscriber.modify_ack_deadline(request={"subscription": subscription, "ack_ids": chunk,
                                                "ack_deadline_seconds": 0})


def ack(subscriber: pubsub_v1.SubscriberClient, subscription: str, letters: Iterable[DeadLetter]) -> None:
    for chunk in _chunks([letter.ack_id for letter in letters]):
        subscriber.acknowledge(request={"subscription": subscription, "ack_ids": chunk})


def inspect(subscription: str, flt: Filter | None = None, *, limit: int | None = None) -> list[DeadLetter]:
    """The DLQ messages matching `flt` (at most `limit`), oldest failure first; nothing is consumed."""
    subscriber = pubsub_v1.SubscriberClient()
    try:
        letters = peek(subscriber, subscription)
        release(subscriber, subscription, letters)
    finally:
        subscriber.close()
    flt = flt or Filter()
    chosen = sorted((x for x in letters if flt.matches(x)), key=lambda x: x.failed_at_ms)
    return chosen[:limit] if limit is not None else chosen


def replay_ordering_key(letter: DeadLetter) -> str:
    """The key the ingress gives the event's customer today (schemas.ordering_key), else none (undecodable).

    Never the key the original carried (the message's, or its `orderingKey` attribute): a dead letter from before
    keys were bounded would bring back a key outside the bounded set (a thread for ever in the emulator)."""
    assert letter.record is not None
    try:
        return ordering_key(decode_envelope(bytes(letter.record["originalData"])))
    except (DecodeError, KeyError, TypeError):
        return ""



def republish(publisher: pubsub_v1.PublisherClient, topic: str, record: dict[str, Any], key: str,
              timeout: float = 30.0) -> str:
    """Publish a DLQ record's original bytes and attributes onto the main topic; the message id once confirmed.

    The copy also carries `replayedAt` (epoch ms), so a consumer can tell an operator's replay from a Pub/Sub
    redelivery (an in-memory dedupe must not drop a replay of an event it dead-lettered).
    """
    attributes = {str(k): str(v) for k, v in (record.get("originalAttributes") or {}).items()}
    attributes[REPLAYED_AT] = str(int(time.time() * 1000))
    future = publisher.publish(topic, bytes(record["originalData"]), ordering_key=key, **attributes)
    try:
        return str(future.result(timeout=timeout))
    except Exception:
        if key:
            publisher.resume_publish(topic, key)
        raise


@dataclass
class ReplayResult:
    replayed: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    skipped: int = 0  # not matching the filter (left in the DLQ)
    dry_run: bool = False


def replay(*, subscription: str, topic: str, flt: Filter | None = None, limit: int | None = None,
           dry_run: bool = False) -> ReplayResult:
    """Re-publish matching DLQ messages onto `topic`; ack each only after its publish is confirmed.

    Everything else (other verdicts, over the limit, undecodable, failed publishes, all of a dry run) is nacked
    so it stays in the DLQ. Replaying twice is safe: the pipeline's eventId commit makes a repeat a no-op.
    """
    flt = flt or Filter()
    result = ReplayResult(dry_run=dry_run)
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    letters = peek(subscriber, subscription)
    keep: list[DeadLetter] = []
    try:
        chosen = sorted((x for x in letters if x.record is not None and flt.matches(x)), key=lambda x: x.failed_at_ms)
        if limit is not None:
            chosen = chosen[:limit]
        chosen_ids = {x.ack_id for x in chosen}
        keep = [x for x in letters if x.ack_id not in chosen_ids]
        result.skipped = len(keep)
        if dry_run:
            result.replayed = chosen
            keep = letters
            return result
        for letter in chosen:
            assert letter.record is not None
            try:
                republish(publisher, topic, letter.record, replay_ordering_key(letter))
            except Exception as exc:
                result.failed.append((letter, f"{type(exc).__name__}: {exc}"))
                keep.append(letter)
                continue
            ack(subscriber, subscription, [letter])
            result.replayed.append(letter)
    finally:
        release(subscriber, subscription, keep)
        subscriber.close()
    return result


def _age(ms: int, now_ms: int) -> str:
    seconds = max(0, (now_ms - ms) // 1000)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(letters: list[DeadLetter], *, title: str = "DLQ") -> Table:
    now_ms = int(time.time() * 1000)
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in ("eventId", "verdict", "reason", "step", "sourceRegion", "failedAt (UTC)", "age"):
        out.add_column(name, overflow="fold" if name == "reason" else "ellipsis",
                       max_width=48 if name == "reason" else None, no_wrap=name != "reason")
    for x in letters:
        reason = x.record["reason"] if x.record is not None else f"undecodable DLQ message: {x.error}"
        out.add_row(x.event_id or "-", x.verdict, reason, x._field("step"), x.source_region,
                    _when(x.failed_at_ms), _age(x.failed_at_ms, now_ms))
    return out


def summary(letters: list[DeadLetter]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for x in letters:
        counts[x.verdict] = counts.get(x.verdict, 0) + 1
    return dict(sorted(counts.items()))


def describe(letter: DeadLetter) -> dict[str, Any]:
    """Everything about one DLQ message, made printable (bytes shown decoded where possible)."""
    out: dict[str, Any] = {"messageId": letter.message_id, "published": letter.published.isoformat(),
                           "attributes": letter.attributes}
    if letter.record is None:
        out["error"] = letter.error
        return out
    record = dict(letter.record)
    data = bytes(record.pop("originalData"))
    record["failedAt"] = f"{_when(record['failedAt'])} UTC ({record['failedAt']})"
    out["record"] = record
    out["originalData"] = {"bytes": len(data), "hex": data[:64].hex() + ("…" if len(data) > 64 else "")}
    try:
        envelope = decode_envelope(data)
    except DecodeError as exc:
        out["originalData"]["decode"] = f"{type(exc).__name__}: {exc}"
    else:
        raw = envelope["data"].pop("rawPayload", b"")
        out["originalData"]["envelope"] = envelope
        if raw:
            try:
                out["originalData"]["rawPayload"] = json.loads(raw)
            except ValueError:
                out["originalData"]["rawPayload"] = raw[:200].decode(errors="replace")
    out["replayOrderingKey"] = replay_ordering_key(letter)
    return out


def print_describe(console: Console, letter: DeadLetter) -> None:
    console.print_json(json.dumps(describe(letter), default=str))
