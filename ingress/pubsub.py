"""The Pub/Sub side of the publisher: one grpc.aio channel from PublisherAsyncClient, one Publish RPC per call."""
from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

import grpc
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.types import pubsub

from ingress.publisher import Message

_PublishRequest = pubsub.PublishRequest.pb()
_PubsubMessage = pubsub.PubsubMessage.pb()
# Reconnect quickly after an outage so /readyz and publishing recover within seconds, not gRPC's 120 s cap.
_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000))


class PubSubSender:
    """Sends Publish RPCs to `topic` through the transport stub of a PublisherAsyncClient.

    The stub is called directly (no api_core retry wrapper): a failed RPC fails its webhooks with 503 and
    PayNow re-sends them, and skipping the wrapper saves about a third of the client CPU per RPC.
    With `emulator_host` the channel is an insecure one to that host (what PUBSUB_EMULATOR_HOST means).
    Create it inside the running event loop: a grpc.aio channel belongs to the loop that made it.
    """

    def __init__(self, topic: str, *, emulator_host: str = "") -> None:
        if emulator_host:
            channel = grpc.aio.insecure_channel(emulator_host, options=_CHANNEL_OPTIONS)
            self._client = PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel))
        else:
            self._client = PublisherAsyncClient()
        self._topic = topic
        self._rpc = self._client.transport.publish
        self._metadata = (("x-goog-request-params", f"topic={urllib.parse.quote(topic, safe='')}"),)

    async def send(self, messages: Sequence[Message], timeout: float) -> Sequence[str]:
        request = _PublishRequest(topic=self._topic, messages=[
            _PubsubMessage(data=data, attributes=attributes, ordering_key=key) for data, attributes, key in messages])
        response = await self._rpc(pubsub.PublishRequest.wrap(request), timeout=timeout, metadata=self._metadata)
        return list(response.message_ids)

    async def probe(self, timeout: float) -> None:
        """An empty Publish: INVALID_ARGUMENT means Pub/Sub answered, needing no permission beyond publish."""
        try:
            await self._rpc(pubsub.PublishRequest(topic=self._topic), timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise

    async def close(self) -> None:
        await self._client.transport.close()
