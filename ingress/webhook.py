"""POST /webhooks/paynow: verify, map, encode, publish, and answer only once Pub/Sub confirmed the message."""
from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from ingress.publisher import PublishUnavailable
from ingress.responses import RETRY_AFTER_UNAVAILABLE, JSONResponse, error, note
from ingress.signature import SignatureError, verify
from ingress.state import IngressState
from schemas import PayloadError, encode_envelope, envelope_attributes, envelope_from_payload, ordering_key
from schemas.attributes import ORDERING_KEY


async def webhook(request: Request) -> Response:
    state: IngressState = request.app.state.ingress
    settings = state.settings
    scope = request.scope
    if state.draining or state.publisher is None:
        return error(scope, 503, "draining", "this instance is draining or starting; retry (another region "
                     "takes over)", {"Retry-After": RETRY_AFTER_UNAVAILABLE})
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        return error(scope, 415, "unsupported_media_type", "Content-Type must be application/json")
    body = await request.body()
    try:
        timestamp_ms = verify(settings.webhook_secrets, request.headers.get("paynow-timestamp"),
                              request.headers.get("paynow-signature"), body, now_ms=time.time_ns() // 1_000_000)
    except SignatureError as exc:
        scope.setdefault("state", {})["signed"] = exc.authenticated
        return error(scope, exc.status, exc.code, exc.detail)
    scope.setdefault("state", {})["signed"] = True  # from here on a refusal is never charged to the rate limit
    try:
        envelope = envelope_from_payload(body, timestamp_ms=timestamp_ms, region=settings.region)
    except PayloadError as exc:
        return error(scope, 400, "invalid_payload", f"{exc.field}: {exc.problem}")
    event_id = envelope["eventId"]
    accepted = {"status": "accepted", "eventId": event_id, "region": settings.region}
    if state.recent.seen(event_id, body):
        note(scope, "duplicate", event_id=event_id)
        return JSONResponse(accepted, status_code=200)
    envelope["minCompatible"] = settings.event_schema_min_compatible
    key = ordering_key(envelope, settings.pubsub_ordering_keys)  # one of a fixed set, chosen by the customer
    try:
        data = encode_envelope(envelope)
    except (ValueError, TypeError, OverflowError) as exc:  # a value Avro cannot carry (lone surrogates, ...)
        return error(scope, 400, "invalid_payload", f"body: cannot be encoded ({type(exc).__name__})",
                     event_id=event_id)
    attributes = envelope_attributes(envelope)
    if not settings.pubsub_ordering:
        # Pub/Sub takes one ordering key per Publish RPC; without keys a whole gathered batch is one RPC. The
        # ledger's result does not depend on arrival order, and the pipeline keys by the envelope, not the key.
        attributes[ORDERING_KEY], key = key, ""
    try:
        await state.publisher.publish(data, attributes, key)
    except PublishUnavailable:
        return error(scope, 503, "publish_unavailable", "Pub/Sub did not confirm the message; retry later",
                     {"Retry-After": RETRY_AFTER_UNAVAILABLE}, event_id=event_id)
    state.recent.remember(event_id, body)
    note(scope, "accepted", event_id=event_id)
    return JSONResponse(accepted, status_code=202)
