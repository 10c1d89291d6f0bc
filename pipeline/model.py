"""The elements that flow between the pipeline's steps."""
from __future__ import annotations

from dataclasses import dataclass

from schemas import Envelope
from schemas.verdicts import VERDICTS, Verdict


@dataclass(frozen=True)
class Message:
    """One Pub/Sub message; `ack_id` is set only by the acking read (the native read acks by itself), `claim`
    only by its dedupe (the id Acknowledge settles and a release forgets)."""

    data: bytes
    attributes: dict[str, str]
    publish_time_ms: int
    message_id: str = ""
    ordering_key: str = ""
    ack_id: str | None = None
    claim: str | None = None


@dataclass(frozen=True)
class Event:
    """A decoded, gated envelope with its message; `uid` is filled in by ResolveAccount."""

    message: Message
    envelope: Envelope
    uid: str | None = None


@dataclass(frozen=True)
class Rejected:
    """A message bound for the DLQ, with why and where it failed."""

    message: Message
    verdict: Verdict
    reason: str
    step: str
    source_region: str = "unknown"
    event_id: str | None = None
    uid: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown DLQ verdict {self.verdict!r}")


def reject(event: Event, verdict: Verdict, reason: str, step: str) -> Rejected:
    """The DLQ element for an event that failed after decoding."""
    return Rejected(event.message, verdict, reason, step, event.envelope.get("region") or "unknown",
                    event.envelope["eventId"], event.uid)
