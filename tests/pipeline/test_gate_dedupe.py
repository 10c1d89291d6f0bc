"""DecodeAndGate verdicts and DedupeEventIds on TestPipeline / TestStream."""
from __future__ import annotations

import dataclasses
import itertools
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dedupe import DedupeEventIds, remember
from pipeline.gate import DecodeAndGate, decode_message
from pipeline.model import Event, Rejected
from schemas import encode_envelope, encode_legacy, fingerprint
from tests.pipeline import factories as f

RUNNER = PipelineOptions(["--runner", "BundleBasedDirectRunner"])
STREAMING = PipelineOptions(["--runner", "BundleBasedDirectRunner", "--streaming"])
V1 = encode_legacy(1, {"version": 1, "eventId": "old", "eventType": "ON_ORDER_COMPLETED", "payloadJson": "{}"})


def v2_bytes() -> bytes:
    env = f.envelope(f.order("v2", "o2", [(f.P20, 1)]))
    data = {k: v for k, v in env["data"].items() if k not in ("deliveryItem", "rawPayload")}
    return encode_legacy(2, {"version": 2, "eventId": "v2", "eventType": env["eventType"],
                             "timestamp": env["timestamp"], "data": data})


def unknown_schema_bytes() -> bytes:
    return b"\xc3\x01" + b"\x00" * 8 + encode_envelope(f.envelope(f.order("x", "o", [(f.P20, 1)])))[10:]


def test_decode_message_verdicts() -> None:
    good = decode_message(f.message(f.order("e1", "o1", [(f.P20, 1)])), 2)
    assert isinstance(good, Event) and good.envelope["eventId"] == "e1"
    v2 = decode_message(f.raw_message(v2_bytes()), 2)
    assert isinstance(v2, Event) and v2.envelope["version"] == 2 and v2.envelope["region"] == "unknown"
    cases = {V1: "drop_incompatible", b"not avro": "drop_malformed", unknown_schema_bytes(): "unknown_schema",
             b"\xc3\x01" + fingerprint(3) + b"\xff\xff": "drop_malformed",
             json.dumps({"version": 1}).encode(): "drop_incompatible"}
    for data, verdict in cases.items():
        result = decode_message(f.raw_message(data, {"region": "europe-west1", "eventId": "x"}), 2)
        assert isinstance(result, Rejected) and result.verdict == verdict, (data, result)
        assert (result.step, result.source_region, result.event_id) == ("DecodeAndGate", "europe-west1", "x")
    assert decode_message(f.raw_message(v2_bytes()), 3).verdict == "drop_incompatible"  # type: ignore[union-attr]


@pytest.mark.parametrize("poison", [
    b"[" * 100_000 + b"]" * 100_000,  # deeply nested JSON: RecursionError in a JSON probe
    b'{"version": ' + b"9" * 5000 + b"}",  # an integer past Python's digit limit
    b"\xc3\x01" + bytes(range(200)),  # a header of random bytes
    bytes(range(256)) * 4,
])
def test_poison_on_the_topic_is_drop_malformed_never_a_crash(poison: bytes) -> None:
    result = decode_message(f.raw_message(poison), 2)
    assert isinstance(result, Rejected) and result.verdict in ("drop_malformed", "unknown_schema"), result


def test_a_decoder_crash_the_codec_did_not_foresee_is_drop_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(data: bytes, *, min_compatible: int) -> dict[str, object]:
        raise KeyError("a bug")

    monkeypatch.setattr("pipeline.gate.decode_envelope", explode)
    result = decode_message(f.message(f.order("e1", "o1", [(f.P20, 1)])), 2)
    assert isinstance(result, Rejected) and result.verdict == "drop_malformed"
    assert result.reason.startswith("decoding crashed: KeyError")


def test_decode_and_gate_routes_valid_and_each_verdict() -> None:
    messages = [f.message(f.order("e1", "o1", [(f.P20, 1)])), f.raw_message(v2_bytes()), f.raw_message(V1),
                f.raw_message(b"garbage"), f.raw_message(unknown_schema_bytes())]
    with TestPipeline(options=RUNNER) as p:
        gated = p | beam.Create(messages) | DecodeAndGate(2, "us-central1")
        assert_that(gated.valid | beam.Map(lambda e: e.envelope["eventId"]), equal_to(["e1", "v2"]), label="valid")
        assert_that(gated.dlq | beam.Map(lambda r: r.verdict),
                    equal_to(["drop_incompatible", "drop_malformed", "unknown_schema"]), label="dlq")


def test_remember_prunes_and_detects() -> None:
    dup, seen = remember({}, "a", 100.0, 60)
    assert not dup and seen == {"a": 100.0}
    dup, seen = remember(seen, "a", 159.0, 60)
    assert dup
    dup, seen = remember({"a": 100.0, "b": 150.0}, "a", 160.0, 60)
    assert not dup and seen == {"b": 150.0, "a": 160.0}


_ticks = itertools.count()


def ticking_clock() -> float:
    """Each call is 100 s after the previous one (elements are processed in stream order)."""
    return 100.0 * next(_ticks)


def frozen_clock() -> float:
    return 0.0


def keyed(event_id: str, replayed_at: str | None = None) -> tuple[str, Event]:
    message = f.message(f.order(event_id, event_id, [(f.P20, 1)]))
    if replayed_at:
        message = dataclasses.replace(message, attributes={**message.attributes, "replayedAt": replayed_at})
    return "uid:u1", Event(message, {"eventId": event_id})


def one_by_one(stream: TestStream, *event_ids: str) -> TestStream:
    for event_id in event_ids:
        stream = stream.add_elements([keyed(event_id)])
    return stream


def test_dedupe_drops_duplicates_inside_the_ttl_and_passes_them_after() -> None:
    global _ticks
    _ticks = itertools.count()
    # clock: a=0, a=100 (dup), b=200, a=300 (300 s after the first: outside a 250 s TTL), a=400 (dup of 300)
    stream = one_by_one(TestStream(), "a", "a", "b", "a", "a").advance_watermark_to_infinity()
    with TestPipeline(options=STREAMING) as p:
        out = p | stream | DedupeEventIds(250, "us-central1", clock=ticking_clock)
        assert_that(out.unique | beam.Map(lambda e: e.envelope["eventId"]), equal_to(["a", "b", "a"]),
                    label="unique")
        assert_that(out.duplicate | beam.Map(lambda m: m.message_id), equal_to(["a", "a"]), label="duplicate")


def test_dedupe_timer_clears_the_key_when_processing_time_passes_the_ttl() -> None:
    # The clock never moves, so pruning never expires anything: only the timer can make "a" new again.
    stream = (one_by_one(TestStream(), "a", "a").advance_processing_time(61)
              .add_elements([keyed("a")]).advance_watermark_to_infinity())
    with TestPipeline(options=STREAMING) as p:
        out = p | stream | DedupeEventIds(60, "us-central1", clock=frozen_clock)
        assert_that(out.unique | beam.Map(lambda e: e.envelope["eventId"]), equal_to(["a", "a"]), label="unique")
        assert_that(out.duplicate | beam.Map(lambda m: m.message_id), equal_to(["a"]), label="duplicate")


def test_a_dlq_replay_passes_the_dedupe_but_its_redelivery_does_not() -> None:
    stream = (TestStream().add_elements([keyed("a")]).add_elements([keyed("a", "1700")])
              .add_elements([keyed("a", "1700")]).add_elements([keyed("a", "1800")]).advance_watermark_to_infinity())
    with TestPipeline(options=STREAMING) as p:
        out = p | stream | DedupeEventIds(3600, "us-central1", clock=frozen_clock)
        assert_that(out.unique | beam.Map(lambda e: e.message.attributes.get("replayedAt")),
                    equal_to([None, "1700", "1800"]), label="unique")
        assert_that(out.duplicate | beam.Map(lambda m: m.attributes.get("replayedAt")), equal_to(["1700"]),
                    label="duplicate")
