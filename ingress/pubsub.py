"""The Pub/Sub side of the publisher: one grpc.aio channel, one `Publish` RPC per call, raw protobuf messages."""
from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

import grpc
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.types import pubsub

from ingress.publisher import Message

_PublishRequest = pubsub.PublishRequest.pb()
_PublishResponse = pubsub.PublishResponse.pb()
_PubsubMessage = pubsub.PubsubMessage.pb()
_METHOD = "/google.pubsub.v1.Publisher/Publish"
ENDPOINT = "pubsub.googleapis.com:443"
# Reconnect quickly after an outage so /readyz and publishing recover within seconds, not gRPC's 120 s cap.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000), ("grpc.keepalive_time_ms", 30_000)]


class PubSubSender:
    """Sends Publish RPCs for `topic` over one grpc.aio channel.

    The channel comes from the generated async client's transport (`PublisherGrpcAsyncIOTransport.
    create_channel`: Application Default Credentials, the Pub/Sub scopes and endpoint), or is an insecure one
    to `emulator_host` (what PUBSUB_EMULATOR_HOST means). The RPC is called on a plain stub with raw protobuf
    messages: `PublisherAsyncClient.publish` adds a retry wrapper, proto-plus conversion and a logging
    interceptor that cost about half again as much client CPU per RPC as the RPC itself, and a failed publish
    is retried by PayNow anyway (it re-sends on our 503). Create it inside the running event loop: a grpc.aio
    channel belongs to the loop that made it.
    """

    def __init__(self, topic: str, *, emulator_host: str = "") -> None:
        if emulator_host:
            self._channel = grpc.aio.insecure_channel(emulator_host, options=_CHANNEL_OPTIONS)
        else:
            self._channel = PublisherGrpcAsyncIOTransport.create_channel(ENDPOINT, options=_CHANNEL_OPTIONS)
        self._rpc = self._channel.unary_unary(_METHOD, request_serializer=_PublishRequest.SerializeToString,
                                              response_deserializer=_PublishResponse.FromString)
        self._topic = topic
        self._metadata = (("x-goog-request-params", f"topic={urllib.parse.quote(topic, safe='')}"),)

    async def send(self, messages: Sequence[Message], timeout: float) -> Sequence[str]:
        request = _PublishRequest(topic=self._topic, messages=[
            _PubsubMessage(data=data, attributes=attributes, ordering_key=key) for data, attributes, key in messages])
        response = await self._rpc(request, timeout=timeout, metadata=self._metadata)
        return list(response.message_ids)

    async def probe(self, timeout: float) -> None:
        """An empty Publish: INVALID_ARGUMENT means Pub/Sub answered, needing no permission beyond publish."""
        try:
            await self._rpc(_PublishRequest(topic=self._topic), timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise

    async def close(self) -> None:
        await self._channel.close()
