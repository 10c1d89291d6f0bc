"""Health, readiness, metrics and the authenticated admin drain switch."""
from __future__ import annotations

import hmac
import logging

from starlette.requests import Request
from starlette.responses import Response

from ingress.ratelimit import client_address
from ingress.responses import RETRY_AFTER_UNAVAILABLE, JSONResponse, error
from ingress.state import IngressState

log = logging.getLogger("ingress.admin")


def _state(request: Request) -> IngressState:
    state: IngressState = request.app.state.ingress
    return state


async def healthz(request: Request) -> Response:
    """Liveness: the process answers; names its region."""
    settings = _state(request).settings
    return JSONResponse({"status": "ok", "region": settings.region, "service": settings.service_name})


async def readyz(request: Request) -> Response:
    """Readiness for the load balancer: 503 while draining, while Pub/Sub fails, or under the rollback switch."""
    state = _state(request)
    if reasons := state.not_ready_reasons():
        return error(request.scope, 503, "not_ready", "; ".join(reasons), {"Retry-After": RETRY_AFTER_UNAVAILABLE})
    return JSONResponse({"status": "ready", "region": state.settings.region})


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _authorize(request: Request) -> Response | None:
    settings = _state(request).settings
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _refuse(request, 401, "unauthorized", "Authorization: Bearer <ADMIN_TOKEN> is required",
                       {"WWW-Authenticate": "Bearer"})
    if not settings.admin_token or not hmac.compare_digest(given.strip().encode(), settings.admin_token.encode()):
        return _refuse(request, 403, "forbidden", "the bearer token is not the admin token")
    return None


def _refuse(request: Request, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """Every refused admin call is a warning with who and where (never the token): someone is probing."""
    peer = (request.scope.get("client") or ("unknown", 0))[0]
    log.warning("admin request refused", extra={
        "status": status, "error": code, "method": request.method, "path": request.url.path,
        "clientIp": client_address(request.scope, _state(request).settings.forwarded_hops),
        "detail": f"{detail} (peer {peer})"})
    return error(request.scope, status, code, detail, headers)


async def _set_draining(request: Request, draining: bool) -> Response:
    if refused := _authorize(request):
        return refused
    state = _state(request)
    state.set_draining(draining, "admin request")
    return JSONResponse({"status": "draining" if draining else "serving", "region": state.settings.region})


async def drain(request: Request) -> Response:
    """Stop taking webhooks (503) and report not-ready, so the load balancer moves traffic away."""
    return await _set_draining(request, True)


async def undrain(request: Request) -> Response:
    """Take webhooks again and report ready (unless another reason keeps the instance out)."""
    return await _set_draining(request, False)
