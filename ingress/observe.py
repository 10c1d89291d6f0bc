"""Times every webhook request and turns its outcome into one JSON log line and Prometheus samples."""
from __future__ import annotations

import logging
import time
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.metrics import IngressMetrics
from ingress.ratelimit import client_address

log = logging.getLogger("ingress.webhook")


def outcome_of(status: int) -> str:
    if status == 202:
        return "accepted"
    if status == 200:
        return "duplicate"
    if status == 503:
        return "unavailable"
    return "refused" if status < 500 else "error"


class ObserveMiddleware:
    """Outermost webhook middleware: status from the response, reason and eventId from the request state."""

    def __init__(self, app: ASGIApp, *, metrics: IngressMetrics, paths: Collection[str],
                 forwarded_hops: int = 0) -> None:
        self.app = app
        self.metrics = metrics
        self.hops = forwarded_hops
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            state = scope.get("state", {})
            reason = state.get("reason", "internal_error")
            self.metrics.observe(status, reason, outcome_of(status), elapsed)
            level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
            if log.isEnabledFor(level):
                log.log(level, "webhook accepted" if status < 400 else "webhook refused", extra={
                    "eventId": state.get("eventId"), "latencyMs": round(elapsed * 1000, 2), "status": status,
                    "error": None if status < 400 else reason, "detail": state.get("detail"),
                    "path": scope["path"], "clientIp": None if status < 400 else client_address(scope, self.hops)})
