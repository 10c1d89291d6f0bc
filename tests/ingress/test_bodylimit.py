"""The body limit refuses a streamed body as soon as it passes the limit and does not read the rest."""
from __future__ import annotations

import asyncio
import json

from starlette.types import Message, Receive, Scope, Send

from ingress.bodylimit import BodySizeLimitMiddleware

CHUNK = 16 * 1024
MIB = 1024 * 1024


def run(chunks: int, headers: list[tuple[bytes, bytes]] | None = None, *, max_bytes: int | None = None,
        disconnect_after: int | None = None) -> tuple[int, list[Message], bytes | None]:
    """Feed `chunks` chunks of 16 KiB through the middleware (the client going away after `disconnect_after`
    of them, if given); return (receive() calls, messages sent, body the app saw)."""
    read = 0
    sent: list[Message] = []
    seen: list[bytes] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        if disconnect_after is not None and read > disconnect_after:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": read < chunks}

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limits = {} if max_bytes is None else {"max_bytes": max_bytes}
    middleware = BodySizeLimitMiddleware(app, paths=["/hook"], **limits)
    scope = {"type": "http", "path": "/hook", "method": "POST", "headers": headers or []}
    asyncio.run(middleware(scope, receive, send))
    return read, sent, seen[0] if seen else None


def test_the_default_limit_is_1_mib() -> None:
    read, sent, seen = run(chunks=64)  # exactly 1 MiB
    assert sent[0]["status"] == 204 and seen == b"x" * MIB
    read, sent, seen = run(chunks=100)
    assert read == 65 and seen is None  # 65 x 16 KiB is the first read past 1 MiB; the rest is never read
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": "payload_too_large", "detail": "body exceeds 1048576 bytes"}


def test_streamed_body_over_the_limit_stops_being_read_at_the_limit() -> None:
    read, sent, seen = run(chunks=100, max_bytes=64 * 1024)
    assert read == 5  # 5 x 16 KiB is the first read past 64 KiB; the other 95 chunks are never read
    assert seen is None
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": "payload_too_large", "detail": "body exceeds 65536 bytes"}


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    read, sent, _ = run(chunks=100, headers=[(b"content-length", b"1048577")])
    assert read == 0 and sent[0]["status"] == 413


def test_body_within_the_limit_reaches_the_app_whole() -> None:
    read, sent, seen = run(chunks=4)
    assert read == 4 and sent[0]["status"] == 204
    assert seen == b"x" * 4 * CHUNK


def test_a_client_gone_mid_body_is_400_incomplete_body_and_the_app_sees_nothing() -> None:
    read, sent, seen = run(chunks=4, disconnect_after=2)
    assert seen is None and read == 3
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {
        "error": "incomplete_body", "detail": "the client went away after 32768 bytes, before the body was complete"}
