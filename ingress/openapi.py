"""The OpenAPI 3 description of the webhook, health and admin endpoints, served at /openapi.json."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingress.bodylimit import MAX_BODY_BYTES
from ingress.responses import JSONResponse
from schemas.paynow import EVENT_TYPE_RE, EVENT_TYPES, ID_RE

WEBHOOK_PATHS = ("/webhooks/paynow", "/api/paynow/webhook")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": _ref("Error")}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return response


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _webhook(operation_id: str, *, deprecated: bool) -> dict[str, Any]:
    return {"post": {
        "operationId": operation_id,
        "summary": "Receive one PayNow webhook" + (" (legacy path, identical behaviour)" if deprecated else ""),
        "deprecated": deprecated,
        "description": "Answers 202 only after Pub/Sub confirmed the event; 200 for an event published recently.",
        "parameters": [
            {"name": "paynow-signature", "in": "header", "required": True,
             "description": 'base64(HMAC-SHA256(secret, "{paynow-timestamp}." + raw body))',
             "schema": {"type": "string"}},
            {"name": "paynow-timestamp", "in": "header", "required": True,
             "description": "Unix epoch milliseconds; accepted within ±300 s of the server clock.",
             "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PayNowWebhook")}}},
        "responses": {
            "200": _json("Duplicate of an event published recently; not published again.", "Accepted"),
            "202": _json("Published to Pub/Sub.", "Accepted"),
            "400": _error("Bad JSON, an unmappable delivery (detail names the field), a stale timestamp, or a body "
                          "cut off by the client (incomplete_body)."),
            "401": _error("Missing, garbled or non-matching signature headers."),
            "413": _error(f"Body over MAX_BODY_BYTES (default {MAX_BODY_BYTES} bytes)."),
            "415": _error("Content-Type is not application/json."),
            "429": _error("This client used up its budget of refused requests (a correctly signed delivery is "
                          "never refused this way).", retry_after=True),
            "503": _error("Pub/Sub did not confirm, or the instance is draining.", retry_after=True),
        },
    }}


def _admin(operation_id: str, summary: str) -> dict[str, Any]:
    return {"post": {
        "operationId": operation_id, "summary": summary, "security": [{"adminToken": []}],
        "responses": {"200": _json("New state.", "AdminState"), "401": _error("No bearer token."),
                      "403": _error("Wrong bearer token.")},
    }}


def document() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "PayNow webhook ingress", "version": "1.0.0",
                 "description": "Verifies PayNow webhooks and publishes them as Avro v3 envelopes to Pub/Sub."},
        "paths": {
            WEBHOOK_PATHS[0]: _webhook("receivePaynowWebhook", deprecated=False),
            WEBHOOK_PATHS[1]: _webhook("receivePaynowWebhookLegacy", deprecated=True),
            "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness; names the region.",
                                 "responses": {"200": _json("Alive.", "Health")}}},
            "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness for the load balancer.",
                                "responses": {"200": _json("Ready to publish.", "Ready"),
                                              "503": _error("Draining, Pub/Sub failing, or rolled back.",
                                                            retry_after=True)}}},
            "/admin/drain": _admin("drain", "Drain this instance (readyz 503, webhooks 503)."),
            "/admin/undrain": _admin("undrain", "Serve again after a drain."),
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "PayNowWebhook": {
                    "type": "object", "required": ["event_type", "event_id", "body"],
                    "description": "A PayNow delivery; the body's schema per event type is PayNow's published "
                                   "webhook definitions (schemas/vendor/paynow/webhook-definitions.json).",
                    "properties": {
                        "event_type": {"type": "string", "pattern": EVENT_TYPE_RE.pattern,
                                       "description": "WebhookEventType, or a type PayNow added since: "
                                                      + ", ".join(sorted(EVENT_TYPES))},
                        "event_id": {"type": "string", "pattern": ID_RE.pattern},
                        "body": {"type": "object"},
                    }},
                "Accepted": {"type": "object", "required": ["status", "eventId", "region"], "properties": {
                    "status": {"type": "string", "enum": ["accepted"]}, "eventId": string, "region": string},
                    "additionalProperties": False},
                "Error": {"type": "object", "required": ["error", "detail"],
                          "properties": {"error": string, "detail": string}, "additionalProperties": False},
                "Health": {"type": "object", "required": ["status", "region"], "properties": {
                    "status": {"type": "string", "enum": ["ok"]}, "region": string, "service": string}},
                "Ready": {"type": "object", "required": ["status", "region"], "properties": {
                    "status": {"type": "string", "enum": ["ready"]}, "region": string}},
                "AdminState": {"type": "object", "required": ["status", "region"], "properties": {
                    "status": {"type": "string", "enum": ["draining", "serving"]}, "region": string}},
            },
        },
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())
