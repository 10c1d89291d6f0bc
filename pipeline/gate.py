"""DecodeAndGate: Avro envelope decoding and the version gate, with a tagged DLQ output."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection

from pipeline.model import Event, Message, Rejected
from pipeline.observability import RegionMetrics
from schemas import DecodeError, decode_envelope
from schemas.attributes import EVENT_ID, REGION, VERSION
from schemas.verdicts import Verdict

VALID = "valid"
DLQ = "dlq"
STEP = "DecodeAndGate"


def decode_message(message: Message, min_compatible: int) -> Event | Rejected:
    """Decode and gate one message: an Event, or a Rejected carrying the codec's verdict."""
    source_region = message.attributes.get(REGION) or "unknown"
    event_id = message.attributes.get(EVENT_ID)
    try:
        envelope = decode_envelope(message.data, min_compatible=min_compatible)
    except DecodeError as exc:
        return Rejected(message, exc.verdict, str(exc)[:500], STEP, source_region, event_id)
    except Exception as exc:  # poison the codec did not foresee: a verdict, never a crash loop (DESIGN §3)
        return Rejected(message, Verdict.DROP_MALFORMED, f"decoding crashed: {exc!r}"[:500], STEP, source_region,
                        event_id)
    return Event(message, envelope)


class _DecodeFn(beam.DoFn):
    def __init__(self, min_compatible: int, region: str) -> None:
        self._min_compatible = min_compatible
        self._region = region

    def setup(self) -> None:
        self._metrics = RegionMetrics(self._region)

    def process(self, message: Message) -> Iterator[Any]:
        result = decode_message(message, self._min_compatible)
        if isinstance(result, Event):
            self._metrics.schema_version(result.envelope["version"], True)
            yield result
            return
        if result.verdict == Verdict.DROP_INCOMPATIBLE:
            self._metrics.schema_version(message.attributes.get(VERSION, "unknown"), False)
        yield beam.pvalue.TaggedOutput(DLQ, result)


class DecodeAndGate(beam.PTransform[PCollection[Message], DoOutputsTuple]):
    """Messages -> (`valid`: Event, `dlq`: Rejected with drop_malformed / unknown_schema / drop_incompatible)."""

    def __init__(self, min_compatible: int, region: str) -> None:
        super().__init__()
        if min_compatible < 1:
            raise ValueError("min_compatible must be >= 1")
        self._min_compatible = min_compatible
        self._region = region

    def expand(self, messages: PCollection[Message]) -> DoOutputsTuple:
        decode = _DecodeFn(self._min_compatible, self._region)
        outputs: DoOutputsTuple = (
            messages | "Decode" >> beam.ParDo(decode).with_outputs(DLQ, main=VALID))
        return outputs
