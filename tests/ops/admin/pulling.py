"""Take what a test published off a subscription: pull and ack until `expect` messages or `timeout`."""
from __future__ import annotations

import time

import google.cloud.pubsub_v1 as pubsub_v1

from ops.admin import dlq


def pull_and_ack(subscription: str, timeout: float, expect: int | None = None) -> list[pubsub_v1.types.ReceivedMessage]:
    subscriber = pubsub_v1.SubscriberClient()
    got: list[pubsub_v1.types.ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (expect is None or len(got) < expect):
        received = dlq.pull_once(subscriber, subscription, 100)
        if received:
            got.extend(received)
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]})
        else:
            time.sleep(0.2)
    subscriber.close()
    return got
