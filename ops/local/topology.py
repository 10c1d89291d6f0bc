"""Names and creation of the Pub/Sub topics and subscriptions the system uses (idempotent)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions

DEFAULT_PROJECT = "paynow-local"


@dataclass(frozen=True)
class Topology:
    """Resource names of one deployment; every name is derived from the project id."""

    project: str = DEFAULT_PROJECT
    topic_id: str = "paynow-events"
    subscription_id: str = "paynow-events-pipeline"
    dlq_topic_id: str = "paynow-events-dlq"
    dlq_subscription_id: str = "paynow-events-dlq-inspect"

    @property
    def topic(self) -> str:
        return f"projects/{self.project}/topics/{self.topic_id}"

    @property
    def subscription(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription_id}"

    @property
    def dlq_topic(self) -> str:
        return f"projects/{self.project}/topics/{self.dlq_topic_id}"

    @property
    def dlq_subscription(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.dlq_subscription_id}"

    def create(self, ack_deadline_seconds: int = 60) -> None:
        """Create topics and subscriptions (ordering enabled on the pipeline's); existing ones are kept."""
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            for topic in (self.topic, self.dlq_topic):
                with contextlib.suppress(exceptions.AlreadyExists):
                    publisher.create_topic(name=topic)
            for sub, topic, ordered in ((self.subscription, self.topic, True),
                                        (self.dlq_subscription, self.dlq_topic, False)):
                with contextlib.suppress(exceptions.AlreadyExists):
                    subscriber.create_subscription(request={
                        "name": sub, "topic": topic, "enable_message_ordering": ordered,
                        "ack_deadline_seconds": ack_deadline_seconds})
        finally:
            subscriber.close()
