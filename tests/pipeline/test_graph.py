"""Both graphs build with the DESIGN §3 step names; the native graph runs end to end on TestStream + emulators."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import userstate
from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1

from ops.admin import dlq
from ops.admin.catalog import map_customer
from ops.local.topology import Topology
from pipeline.firestore_transport import FirestoreTransport
from pipeline.main import build_pipeline, parse_options
from schemas import decode_dlq_record, encode_legacy
from tests.pipeline import factories as f

STEPS = ["ReadEnvelopes", "DecodeAndGate", "KeyByOrderingKey", "DedupeEventIds", "ResolveAccount",
         "ApplyToLedger", "PublishDeadLetters"]


def flags(topo: Topology, *extra: str) -> list[str]:
    return ["--subscription", topo.subscription, "--dlq_topic", topo.dlq_topic, "--project", topo.project,
            "--region", "us-central1", *extra]


class _Inspect(PipelineVisitor):
    def __init__(self) -> None:
        self.top: list[str] = []
        self.timers = 0
        self.state = 0

    def enter_composite_transform(self, node: Any) -> None:
        if node.full_label and "/" not in node.full_label:
            self.top.append(node.full_label)

    def visit_transform(self, node: Any) -> None:
        self.enter_composite_transform(node)
        if isinstance(node.transform, beam.ParDo) and userstate.is_stateful_dofn(node.transform.dofn):
            states, timers = userstate.get_dofn_specs(node.transform.dofn)
            self.state += len(states)
            self.timers += len(timers)


def inspect(p: beam.Pipeline) -> _Inspect:
    visitor = _Inspect()
    p.visit(visitor)
    return visitor


def test_acking_graph_has_every_step_acks_and_releases_and_has_no_timers() -> None:
    topo = Topology(project="paynow-test")
    p = build_pipeline(parse_options(flags(topo)))
    seen = inspect(p)
    assert [s for s in seen.top if s in STEPS] == STEPS
    assert {"Acknowledge", "ReleaseForRedelivery"} <= set(seen.top) and "CollectDeadLetters" not in seen.top
    # DESIGN §3 trap: no timers next to PeriodicImpulse; the dedupe's memory is the claims Acknowledge settles
    assert seen.state == 0 and seen.timers == 0
    assert p.options.view_as(beam.options.pipeline_options.StandardOptions).runner == "FnApiRunner"


def test_native_graph_for_dataflow_has_the_timer_dedupe_and_no_ack_step() -> None:
    topo = Topology(project="paynow-test")
    options = PipelineOptions(flags(topo, "--runner", "DataflowRunner", "--streaming",
                                    "--temp_location", "gs://paynow-test/tmp", "--staging_location", "gs://paynow-test/staging",
                                    "--dry_run=True", "--no_auth"))
    p = build_pipeline(options)
    seen = inspect(p)
    assert [s for s in seen.top if s in STEPS] == STEPS
    assert "CollectDeadLetters" in seen.top and "Acknowledge" not in seen.top
    assert seen.timers == 1
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ReadEnvelopes/Read", "DedupeEventIds/Remember", "ApplyToLedger/Commit"} <= names


def _fail_me(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits touching webhookEvents/fail-me fail: in a batch as a precondition (forcing one-by-one), alone as
    InvalidArgument (a permanent refusal: write_failed)."""
    real_send = FirestoreTransport._send

    def send(self: FirestoreTransport, writes: list[Any]) -> None:
        names = [w.update.name for w in writes]  # a create is an update with exists=false
        if any(n.endswith("webhookEvents/fail-me") for n in names):
            events = [n for n in names if "/webhookEvents/" in n]
            raise gexc.AlreadyExists("forced") if len(events) > 1 else gexc.InvalidArgument("forced")
        real_send(self, writes)

    monkeypatch.setattr(FirestoreTransport, "_send", send)


def test_native_graph_runs_on_teststream_against_the_emulators(topology: Topology, firestore_db: firestore.Client,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    map_customer(firestore_db, "c-mapped", "u2")
    _fail_me(monkeypatch)
    v1 = encode_legacy(1, {"version": 1, "eventId": "old", "eventType": "ON_ORDER_COMPLETED", "payloadJson": "{}"})
    good = f.message(f.order("e1", "o1", [(f.P20, 2), (f.P50, 1)]))
    stream = (TestStream()
              .add_elements([good, good, f.message(f.order("e2", "o2", [(f.P500, 1)], customer="c-mapped", uid=None)),
                             f.raw_message(v1, {"region": "europe-west1"}), f.raw_message(b"junk"),
                             f.raw_message(b"\xc3\x01" + b"\x01" * 20),
                             f.message(f.order("e3", "o3", [(f.P20, 1)], customer="c-unknown", uid=None)),
                             f.message(f.order("e4", "o4", [("404", 1)])),
                             f.raw_message(pre_v4_cycle(), {"eventId": "e5"}),
                             f.message(f.refund("e6", "o1")),  # no customer, no uid: its order's
                             f.message(f.no_effect("ON_PAYMENT_COMPLETED", "e7", customer_id="c-unknown")),
                             f.message(f.order("fail-me", "o5", [(f.P20, 1)]))])
              .advance_watermark_to_infinity())
    options = parse_options(flags(topology, "--read_mode", "native", "--runner", "BundleBasedDirectRunner",
                                  "--max_write_attempts", "2"))
    result = build_pipeline(options, read=stream).run()
    result.wait_until_finish()

    assert firestore_db.document("users/u1/wallet/points").get().get("paidBalance") == 0  # bought, refunded
    assert firestore_db.document("users/u2/wallet/points").get().get("paidBalance") == 500
    assert firestore_db.document("webhookEvents/e2").get().get("uid") == "u2"
    verdicts = dlq_verdicts(topology, 7)
    assert verdicts == {("drop_incompatible", "DecodeAndGate", None), ("drop_malformed", "DecodeAndGate", None),
                        ("unknown_schema", "DecodeAndGate", None), ("unmapped_customer", "ResolveAccount", "e3"),
                        ("unmapped_product", "ApplyToLedger", "e4"), ("drop_malformed", "ApplyToLedger", "e5"),
                        ("write_failed", "ApplyToLedger", "fail-me")}
    counters: Counter[str] = Counter()
    for counter in result.metrics().query()["counters"]:  # the same name counts in several steps
        counters[counter.key.metric.name.removesuffix("_us-central1")] += counter.committed
    # (DirectRunner returns before it commits the metrics of the last bundles after the dedupe, so the DLQ
    # verdict counters are checked on the Prometheus endpoint in test_streaming instead.)
    assert firestore_db.document("webhookEvents/e7").get().get("status") == "ignored"
    assert {k: counters[k] for k in ("schema_v4_compatible", "schema_v3_compatible", "schema_vunknown_incompatible",
                                     "duplicate", "ignored")} == {
        "schema_v4_compatible": 8, "schema_v3_compatible": 1, "schema_vunknown_incompatible": 1, "duplicate": 1,
        "ignored": 1}
    # the refund is "recorded" if it overtook its order (whose commit then writes purchase and reversal)
    assert counters["applied"] + counters["recorded"] == 3 and counters["applied"] >= 2
    latency = {d.key.metric.name: d.committed for d in result.metrics().query()["distributions"]}
    assert latency["publish_to_commit_ms_us-central1"].count == 4


def pre_v4_cycle() -> bytes:
    """A v3 subscription renewal (a billing period, no billing_cycle_sequence): drop_malformed since v4."""
    return encode_legacy(3, {"version": 3, "minCompatible": 2, "eventId": "e5", "eventType": "ON_SUBSCRIPTION_RENEWED",
                             "timestamp": 0, "region": "us-central1", "data": {
                                 "customer": {"id": "c1", "uid": "u1"}, "rawPayload": b"",
                                 "subscription": {"id": "s1", "productId": f.BASIC_MONTHLY,
                                                  "periodStart": "2026-01-01"}}})


def dlq_verdicts(topo: Topology, expected: int, timeout: float = 30) -> set[tuple[str, str, str | None]]:
    """Pull the DLQ subscription until `expected` records arrived; check each record against its attributes."""
    subscriber = pubsub_v1.SubscriberClient()
    found: set[tuple[str, str, str | None]] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            messages = dlq.pull_once(subscriber, topo.dlq_subscription, 100)
            for received in messages:
                record = decode_dlq_record(received.message.data)
                attrs = dict(received.message.attributes)
                assert attrs["verdict"] == record["verdict"] and attrs["step"] == record["step"]
                assert record["workerRegion"] == attrs["workerRegion"] == "us-central1"
                assert record["reason"] and record["failedAt"] > 0 and record["originalData"]
                assert attrs.get("eventId") == record["eventId"]
                found.add((record["verdict"], record["step"], record["eventId"]))
            if messages:
                subscriber.acknowledge(request={"subscription": topo.dlq_subscription,
                                                "ack_ids": [r.ack_id for r in messages]})
            else:
                time.sleep(0.2)
    finally:
        subscriber.close()
    return found
