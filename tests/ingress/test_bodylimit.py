"""The body limit refuses a streamed body as soon as it passes 64 KiB and does not read the rest."""
from __future__ import annotations

import asyncio
import json

from starlette.types import Message, Receive, Scope, Send

from ingress.bodylimit import BodySizeLimitMiddleware

CHUNK = 16 * 1024


def run(chunks: int, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, list[Message], bytes | None]:
    """Feed `chunks` chunks of 16 KiB through the middleware; return (chunks read, messages sent, body seen)."""
    read = 0
    sent: list[Message] = []
    seen: list[bytes] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": read < chunks}

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = BodySizeLimitMiddleware(app, paths=["/hook"])
    scope = {"type": "http", "path": "/hook", "method": "POST", "headers": headers or []}
    asyncio.run(middleware(scope, receive, send))
    return read, sent, seen[0] if seen else None


def test_streamed_body_over_the_limit_stops_being_read_at_the_limit() -> None:
    read, sent, seen = run(chunks=100)
    assert read == 5  # 5 x 16 KiB is the first read past 64 KiB; the other 95 chunks are never read
    assert seen is None
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": "payload_too_large", "detail": "body exceeds 65536 bytes"}


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    read, sent, _ = run(chunks=100, headers=[(b"content-length", b"1000000")])
    assert read == 0 and sent[0]["status"] == 413


def test_body_within_the_limit_reaches_the_app_whole() -> None:
    read, sent, seen = run(chunks=4)
    assert read == 4 and sent[0]["status"] == 204
    assert seen == b"x" * 4 * CHUNK
