"""Refuse bodies over a byte limit with 413, reading no further than the limit; a cut-off body is a 400; a body
not received within the deadline is a 408."""
from __future__ import annotations

import asyncio
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.responses import error

MAX_BODY_BYTES = 1024 * 1024  # the default of the MAX_BODY_BYTES setting
BODY_TIMEOUT_SECONDS = 10.0  # the default of the BODY_TIMEOUT setting: PayNow sends a few KB at once


class BodySizeLimitMiddleware:
    """Buffers at most `max_bytes` of the body on `paths` and hands it on whole; a longer body gets 413 at once,
    and a client that goes away before the last chunk gets 400 `incomplete_body` (a truncated body must not
    reach the signature check, where it would pass for a forgery). A body not wholly received `timeout` seconds
    after the request's headers gets 408 `body_timeout` with `Connection: close`: the request ends, so a slow
    client holds its concurrency slot (and its connection) for `timeout` at most, not the whole request timeout."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES, timeout: float = BODY_TIMEOUT_SECONDS,
                 paths: Collection[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send, 413, "payload_too_large", f"body exceeds {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        refusal: tuple[int, str, str] | None = None
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # http.disconnect before the last chunk
                        refusal = (400, "incomplete_body",
                                   f"the client went away after {size} bytes, before the body was complete")
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        refusal = (413, "payload_too_large", f"body exceeds {self.max_bytes} bytes")
                        break
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, receive, send, 408, "body_timeout",
                               f"the body was not received within {self.timeout:g} s ({size} bytes arrived)",
                               {"Connection": "close"})
            return
        if refusal is not None:
            await self._refuse(scope, receive, send, *refusal)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, detail: str,
                      headers: dict[str, str] | None = None) -> None:
        """Answered (and logged) even after a disconnect: the server drops what it cannot deliver."""
        await error(scope, status, code, detail, headers)(scope, receive, send)
