"""The ingress's floor for `ops.load.bench_ingress`: its own webhook work on raw ASGI, nothing else.

Verify the signature, map the delivery, encode the envelope, choose the ordering key and publish with the
ingress's own `BatchingPublisher` and `PubSubSender`, then answer 202: what `ingress.webhook` does, without
Starlette, its middleware, the log line, the metrics, the duplicate cache or any refusal path. What the real
ingress costs above this floor is the framework's and the observability's share; what this floor costs is what
the design (one confirmed Publish per ordering key in flight) costs in CPython whatever the framework. A benchmark
instrument, not a server: a request it cannot take is answered 400 without detail.

`FLOOR_PUBLISH=0` skips the publish (the floor of everything but Pub/Sub). Settings come from the environment as
for the ingress (`PUBSUB_ORDERING_KEYS` among them).
"""
from __future__ import annotations

import os
import time
from typing import Any

import orjson

from ingress.__main__ import tune_gc
from ingress.publisher import BatchingPublisher
from ingress.pubsub import PubSubSender
from ingress.settings import Settings
from ingress.signature import verify
from schemas import encode_envelope, envelope_attributes, envelope_from_payload, ordering_key

_settings = Settings.from_env(os.environ)
_PUBLISH = os.environ.get("FLOOR_PUBLISH", "1") != "0"
_publisher: list[BatchingPublisher] = []
_JSON = (b"content-type", b"application/json")


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            sender = PubSubSender(_settings.topic, emulator_host=_settings.pubsub_emulator_host)
            publisher = BatchingPublisher(sender, max_messages=_settings.publish_batch_max,
                                          linger=_settings.publish_linger_ms / 1000, timeout=_settings.publish_timeout)
            await publisher.start()
            _publisher.append(publisher)
            tune_gc()  # as `python -m ingress` does
            await send({"type": "lifespan.startup.complete"})
        else:
            for publisher in _publisher:
                await publisher.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/readyz":
        await _answer(send, 200 if _publisher else 503, b"{}")
        return
    body = b"".join(chunks)
    headers = dict(scope["headers"])
    try:
        timestamp_ms = verify(_settings.webhook_secrets, headers.get(b"paynow-timestamp", b"").decode(),
                              headers.get(b"paynow-signature", b"").decode(), body, now_ms=time.time_ns() // 1_000_000)
        envelope = envelope_from_payload(body, timestamp_ms=timestamp_ms, region=_settings.region)
    except Exception:  # a benchmark instrument: the ingress's own refusals are tested on the ingress
        await _answer(send, 400, b"{}")
        return
    envelope["minCompatible"] = _settings.event_schema_min_compatible
    key = ordering_key(envelope, _settings.pubsub_ordering_keys)
    data = encode_envelope(envelope)
    if _PUBLISH:
        await _publisher[0].publish(data, envelope_attributes(envelope), key)
    await _answer(send, 202, orjson.dumps({"status": "accepted", "eventId": envelope["eventId"],
                                           "region": _settings.region}))
