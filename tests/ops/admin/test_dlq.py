"""DLQ tools against the Pub/Sub emulator: inspect without consuming, filters, show, replay and its acks."""
from __future__ import annotations

import datetime as dt
import time

from google.cloud import pubsub_v1

from ops.admin import dlq
from ops.local.topology import Topology
from schemas import (
    customer_ordering_key,
    deliveries,
    encode_dlq_record,
    encode_envelope,
    encode_legacy,
    envelope_attributes,
    envelope_from_payload,
)
from tests.ops.admin.pulling import pull_and_ack


def _envelope(event_id: str, uid: str | None, customer: str = "cus_1") -> tuple[bytes, dict[str, str]]:
    delivery = deliveries.order_completed(event_id, f"o_{event_id}", customer,
                                          [deliveries.order_line(f"l_{event_id}", "458255405240287232")], uid=uid)
    envelope = envelope_from_payload(deliveries.encode(delivery), timestamp_ms=1_700_000_000_000,
                                     region="europe-west1")
    return encode_envelope(envelope), envelope_attributes(envelope)


def _dead(topology: Topology, event_id: str, verdict: str, data: bytes, attributes: dict[str, str],
          source: str = "europe-west1", failed_at: int = 1_700_000_000_000) -> None:
    record = {"originalData": data, "originalAttributes": attributes, "verdict": verdict, "reason": f"{verdict}!",
              "failedAt": failed_at, "step": "ResolveAccount", "sourceRegion": source, "workerRegion": "us-central1",
              "eventId": event_id}
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topology.dlq_topic, encode_dlq_record(record), verdict=verdict, eventId=event_id,
                      sourceRegion=source, workerRegion="us-central1", step="ResolveAccount").result(timeout=30)


def _seed(topology: Topology) -> None:
    data, attrs = _envelope("e1", None, "cus_unmapped")
    _dead(topology, "e1", "unmapped_customer", data, attrs, failed_at=1_700_000_000_300)
    data, attrs = _envelope("e2", "u2")
    _dead(topology, "e2", "unmapped_product", data, attrs, source="us-central1", failed_at=1_700_000_000_200)
    v1 = encode_legacy(1, {"version": 1, "eventId": "e3", "eventType": "ON_ORDER_COMPLETED", "payloadJson": "{}"})
    _dead(topology, "e3", "drop_incompatible", v1, {"version": "1", "eventId": "e3"}, failed_at=1_700_000_000_100)


def _main_messages(topology: Topology, expect: int, timeout: float = 10) -> list[pubsub_v1.types.ReceivedMessage]:
    return pull_and_ack(topology.subscription, timeout, expect)


def test_inspect_filters_and_consumes_nothing(topology: Topology) -> None:
    _seed(topology)
    everything = dlq.inspect(topology.dlq_subscription)
    assert [x.event_id for x in everything] == ["e3", "e2", "e1"]  # oldest failure first
    assert dlq.summary(everything) == {"drop_incompatible": 1, "unmapped_customer": 1, "unmapped_product": 1}
    only = dlq.inspect(topology.dlq_subscription, dlq.Filter(verdicts=frozenset({"unmapped_customer"})))
    assert [(x.event_id, x.verdict, x.source_region) for x in only] == [("e1", "unmapped_customer", "europe-west1")]
    assert [x.event_id for x in dlq.inspect(topology.dlq_subscription, dlq.Filter(region="us-central1"))] == \
        ["e3", "e2", "e1"]  # every message was handled by the us-central1 worker
    assert [x.event_id for x in dlq.inspect(topology.dlq_subscription, dlq.Filter(event_ids=frozenset({"e2"})))] \
        == ["e2"]
    assert len(dlq.inspect(topology.dlq_subscription, limit=2)) == 2
    assert len(dlq.inspect(topology.dlq_subscription)) == 3  # still all there


def test_describe_shows_the_record_and_decoded_envelope(topology: Topology) -> None:
    _seed(topology)
    letters = {x.event_id: x for x in dlq.inspect(topology.dlq_subscription)}
    shown = dlq.describe(letters["e1"])
    assert shown["record"]["verdict"] == "unmapped_customer" and shown["record"]["reason"] == "unmapped_customer!"
    assert shown["originalData"]["envelope"]["eventId"] == "e1"
    assert shown["originalData"]["rawPayload"]["event_id"] == "e1"  # the PayNow delivery as it arrived
    assert shown["originalData"]["rawPayload"]["body"]["customer"]["id"] == "cus_unmapped"
    assert shown["replayOrderingKey"] == customer_ordering_key("cus_unmapped")
    assert "IncompatibleVersion" in dlq.describe(letters["e3"])["originalData"]["decode"]
    assert dlq.table(list(letters.values())).row_count == 3


def test_replay_republishes_matching_messages_with_attributes_and_ordering_key(topology: Topology) -> None:
    _seed(topology)
    result = dlq.replay(subscription=topology.dlq_subscription, topic=topology.topic,
                        flt=dlq.Filter(verdicts=frozenset({"unmapped_customer"})))
    assert [x.event_id for x in result.replayed] == ["e1"] and result.skipped == 2 and not result.failed
    (message,) = _main_messages(topology, 1)
    original, attributes = _envelope("e1", None, "cus_unmapped")
    assert message.message.data == original
    replayed = dict(message.message.attributes)
    assert int(replayed.pop(dlq.REPLAYED_AT)) >= time.time() * 1000 - 60_000
    assert replayed == attributes
    assert message.message.ordering_key == customer_ordering_key("cus_unmapped")
    assert sorted(x.event_id for x in dlq.inspect(topology.dlq_subscription)) == ["e2", "e3"]  # acked, others stay


def test_dry_run_and_limit_change_nothing_beyond_the_limit(topology: Topology) -> None:
    _seed(topology)
    dry = dlq.replay(subscription=topology.dlq_subscription, topic=topology.topic, dry_run=True)
    assert len(dry.replayed) == 3 and dry.dry_run
    assert len(dlq.inspect(topology.dlq_subscription)) == 3
    assert _main_messages(topology, 1, timeout=1) == []
    limited = dlq.replay(subscription=topology.dlq_subscription, topic=topology.topic, limit=1)
    assert [x.event_id for x in limited.replayed] == ["e3"]  # the oldest failure first
    assert len(_main_messages(topology, 1)) == 1
    assert len(dlq.inspect(topology.dlq_subscription)) == 2


def test_a_failed_publish_leaves_the_message_in_the_dlq(topology: Topology) -> None:
    _seed(topology)
    result = dlq.replay(subscription=topology.dlq_subscription, topic=f"projects/{topology.project}/topics/missing",
                        flt=dlq.Filter(event_ids=frozenset({"e2"})))
    assert not result.replayed and [x.event_id for x, _ in result.failed] == ["e2"]
    assert len(dlq.inspect(topology.dlq_subscription)) == 3


def test_a_replay_takes_todays_bounded_key_never_the_old_one() -> None:
    """A dead letter from before keys were bounded (`orderingKey` attribute `uid:u9`) is replayed under the
    customer's key of the bounded set; an undecodable one without a key."""
    data, attributes = _envelope("e9", "u9", "cus_9")
    old = {"originalData": data, "originalAttributes": {**attributes, "orderingKey": "uid:u9"}}
    letter = dlq.DeadLetter("ack", "m9", dt.datetime.now(dt.UTC), {}, old)
    assert dlq.replay_ordering_key(letter) == customer_ordering_key("cus_9")
    broken = dlq.DeadLetter("ack", "m10", dt.datetime.now(dt.UTC), {}, {"originalData": b"{not avro"})
    assert dlq.replay_ordering_key(broken) == ""
