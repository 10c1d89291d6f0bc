"""create_app(settings): the ingress assembled as data — routes, middleware, lifespan."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingress import endpoints
from ingress.bodylimit import BodySizeLimitMiddleware
from ingress.dedupe import RecentEvents
from ingress.metrics import IngressMetrics
from ingress.observe import ObserveMiddleware
from ingress.openapi import WEBHOOK_PATHS, openapi
from ingress.publisher import BatchingPublisher, Publisher
from ingress.pubsub import PubSubSender
from ingress.ratelimit import RateLimitMiddleware, TokenBucket
from ingress.responses import JSONResponse
from ingress.settings import Settings
from ingress.state import IngressState
from ingress.webhook import webhook

log = logging.getLogger("ingress")


def _pubsub_publisher(settings: Settings, metrics: IngressMetrics) -> Publisher:
    sender = PubSubSender(settings.topic, emulator_host=settings.pubsub_emulator_host)
    return BatchingPublisher(sender, max_messages=settings.publish_batch_max,
                             linger=settings.publish_linger_ms / 1000, timeout=settings.publish_timeout,
                             on_failure=metrics.publish_failed)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings, *, publisher: Publisher | None = None) -> Starlette:
    """The ingress app; without `publisher` it publishes to settings.topic, created when the app starts."""
    metrics = IngressMetrics(settings.region)
    state = IngressState(settings, metrics, RecentEvents(settings.dedupe_ttl_seconds))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if unbound := settings.unbound_secrets:
            log.warning("webhook secrets not bound to an event type", extra={"detail": (
                f"{unbound} of {len(settings.webhook_secrets)} webhook secrets verify deliveries of any event type; "
                "bind each to its PayNow subscription's type (EVENT_TYPE:secret or PAYNOW_WEBHOOK_SECRETS_<TYPE>, "
                "RUNBOOK.md Secret rotation)")})
        state.publisher = publisher or _pubsub_publisher(settings, metrics)
        await state.publisher.start()
        metrics.watch_paused_keys(lambda: state.publisher.paused_keys if state.publisher else 0)
        try:
            yield
        finally:
            await state.publisher.close()  # uvicorn already let in-flight requests finish

    routes = [
        *(Route(path, webhook, methods=["POST"]) for path in WEBHOOK_PATHS),
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/readyz", endpoints.readyz, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/admin/drain", endpoints.drain, methods=["POST"]),
        Route("/admin/undrain", endpoints.undrain, methods=["POST"]),
    ]
    middleware = [
        Middleware(ObserveMiddleware, metrics=metrics, paths=WEBHOOK_PATHS, forwarded_hops=settings.forwarded_hops),
        Middleware(RateLimitMiddleware, bucket=TokenBucket(settings.rate_limit_burst, settings.rate_limit_per_minute),
                   forwarded_hops=settings.forwarded_hops, paths=WEBHOOK_PATHS),
        Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout,
                   paths=WEBHOOK_PATHS),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})
    app.state.ingress = state
    return app
