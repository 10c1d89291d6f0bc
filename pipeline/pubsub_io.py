"""The Pub/Sub read Dataflow runs (`NativeRead`: it acknowledges after its checkpoint) and the readiness line."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.pvalue import PBegin, PCollection
from apache_beam.utils.timestamp import Timestamp

from pipeline.model import Message
from pipeline.observability import log

_ready_logged = threading.Event()


def millis(value: Any) -> int:
    """Epoch ms from a datetime, a protobuf Timestamp or a Beam Timestamp (publish times come in all three)."""
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, Timestamp):
        return int(value.micros // 1000)
    if hasattr(value, "seconds"):
        return int(value.seconds) * 1000 + int(getattr(value, "nanos", 0)) // 1_000_000
    return int(value)


def log_ready(**fields: Any) -> None:
    """The one INFO `pipeline ready` line per process."""
    if not _ready_logged.is_set():
        _ready_logged.set()
        log(logging.INFO, "pipeline ready", **fields)


def _from_pubsub(message: Any) -> Message:
    return Message(bytes(message.data or b""), dict(message.attributes or {}), millis(message.publish_time),
                   message.message_id or "", message.ordering_key or "")


class NativeRead(beam.PTransform[PBegin, PCollection[Message]]):
    """Beam's ReadFromPubSub: right on Dataflow, which acknowledges only after its durable checkpoint."""

    def __init__(self, subscription: str) -> None:
        super().__init__()
        self._subscription = subscription

    def expand(self, begin: PBegin) -> PCollection[Message]:
        messages: PCollection[Message] = (
            begin
            | "Read" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
            | "ToMessage" >> beam.Map(_from_pubsub))
        return messages
