"""A small client of PayNow's Management API (webhook subscriptions, delivery history, orders, subscriptions) that
copes with its rate limits (429 + Retry-After), its 5xx (retried with backoff) and names PAYNOW_API_KEY when the key
is refused. It sends the key over https only (plain http to a loopback address excepted), and never keeps a webhook
subscription's `secret`: PayNow returns it with every subscription, and whoever holds it can sign deliveries."""
from __future__ import annotations

import email.utils
import ipaddress
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_BASE_URL = "https://api.paynow.gg"
KEY_SETTING = "PAYNOW_API_KEY"
RETRYABLE = frozenset({500, 502, 503, 504})
ORDERS_PAGE = 100  # the API's maximum `limit`


class ApiError(RuntimeError):
    """The Management API refused a request or stayed unavailable after the retries."""


class AuthError(ApiError):
    """401/403: the API key is missing, wrong, revoked or lacks a permission."""


class NotFound(ApiError):
    """404: the store has no such order / subscription / webhook."""


class InsecureUrl(ApiError):
    """A base URL the key must not be sent to: not https, and not plain http to a loopback address."""


URL_SETTING = "PAYNOW_API_URL"
SECRET_FIELD = "secret"
"""WebhookSubscriptionDto's signing secret: dropped from every subscription the moment it arrives."""


def check_base_url(url: str) -> str:
    """`url` if the API key may be sent there (https, or http to 127.0.0.0/8, ::1 or localhost), else InsecureUrl."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InsecureUrl(f"{URL_SETTING} / --api-url: {url[:120]!r} is not a URL ({exc})") from None
    host = parsed.host
    if parsed.scheme == "https" and host:
        return url
    if parsed.scheme == "http" and host:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return url
    raise InsecureUrl(f"{URL_SETTING} / --api-url: {url[:120]!r} is not https: the API key is sent only over https "
                      f"(plain http only to a loopback address such as http://127.0.0.1:PORT); nothing was sent")


@dataclass
class RetryPolicy:
    """How long to keep at it: 429s wait Retry-After (capped), 5xx and connection errors back off exponentially."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0


class ManagementApi:
    """`Authorization: APIKey <token>` requests against `base_url`; pass `client` to talk to an in-process fake."""

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, client: httpx.Client | None = None,
                 policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[str], None] | None = None, timeout: float = 30.0) -> None:
        if not api_key:
            raise AuthError(f"no PayNow API key: set {KEY_SETTING} (a store API key from the PayNow dashboard)")
        if client is None:
            check_base_url(base_url)  # before any request carries the key
        self._client = client or httpx.Client(base_url=base_url, timeout=timeout, follow_redirects=False)
        self._owned = client is None
        self._headers = {"Authorization": f"APIKey {api_key}", "Accept": "application/json"}
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._on_wait = on_wait or (lambda _msg: None)
        self.requests = 0
        self.waited = 0.0

    def close(self) -> None:
        if self._owned:
            self._client.close()

    # -- transport -----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: Any = None, json: Any = None) -> httpx.Response:
        """One call, retried on 429 / 5xx / connection errors; AuthError on 401/403, ApiError on other 4xx."""
        last = ""
        for attempt in range(self.policy.attempts):
            self.requests += 1
            try:
                response = self._client.request(method, path, params=params, json=json, headers=self._headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                delay = self._backoff(attempt)
            else:
                status = response.status_code
                if status < 400:
                    return response
                detail = _detail(response)
                if status in (401, 403):
                    raise AuthError(f"PayNow refused the API key ({status} {detail}) on {method} {path}: check "
                                    f"{KEY_SETTING} (a store API key with read access to webhooks, orders and "
                                    f"subscriptions; RUNBOOK.md, Reconciliation)")
                if status == 429:
                    last = f"429 rate limited ({detail})"
                    delay = min(_retry_after(response) or self._backoff(attempt), self.policy.max_delay)
                elif status in RETRYABLE:
                    last = f"{status} {detail}"
                    delay = self._backoff(attempt)
                elif status == 404:
                    raise NotFound(f"{method} {path}: 404 {detail}")
                else:
                    raise ApiError(f"{method} {path}: {status} {detail}")
            if attempt + 1 < self.policy.attempts:
                self._on_wait(f"{method} {path}: {last}; retrying in {delay:.1f} s")
                self.waited += delay
                self._sleep(delay)
        raise ApiError(f"{method} {path}: still failing after {self.policy.attempts} attempts ({last})")

    def _backoff(self, attempt: int) -> float:
        delay = min(self.policy.max_delay, self.policy.base_delay * 2.0 ** attempt)
        return delay * (0.5 + random.random() / 2)  # jitter: many reconcilers must not retry in step

    # -- endpoints -----------------------------------------------------------------------------------------
    def webhooks(self, store_id: str) -> list[dict[str, Any]]:
        """The store's webhook subscriptions (each subscribes to one event type), each without its `secret`: PayNow
        returns it, and it is dropped here on arrival, before anything else can log or keep it."""
        body = self.request("GET", f"/v1/stores/{store_id}/webhooks").json()
        subscriptions = body if isinstance(body, list) else []
        for subscription in subscriptions:
            if isinstance(subscription, dict):
                subscription.pop(SECRET_FIELD, None)
        return [s for s in subscriptions if isinstance(s, dict)]

    def order(self, store_id: str, order_id: str) -> dict[str, Any] | None:
        """One order (OrderDto), or None when PayNow has no such order (404)."""
        return self._one(f"/v1/stores/{store_id}/orders/{order_id}")

    def subscription(self, store_id: str, subscription_id: str) -> dict[str, Any] | None:
        """One subscription (SubscriptionDto), or None when PayNow has no such subscription (404)."""
        return self._one(f"/v1/stores/{store_id}/subscriptions/{subscription_id}")

    def _one(self, path: str) -> dict[str, Any] | None:
        try:
            body = self.request("GET", path).json()
        except NotFound:
            return None
        return body if isinstance(body, dict) else None

    def history_page(self, store_id: str, webhook_id: str, page: int, state: str = "all") -> list[dict[str, Any]]:
        body = self.request("GET", f"/v1/stores/{store_id}/webhooks/{webhook_id}/history",
                            params={"page": page, "state": state}).json()
        items: list[dict[str, Any]] = body.get("history") or []
        return items

    def history(self, store_id: str, webhook_id: str, *, since_ms: int, state: str = "all",
                max_pages: int = 10_000) -> Iterator[dict[str, Any]]:
        """Every queued webhook created at or after `since_ms`, page by page (newest first) until a page is empty or
        wholly older than the window."""
        for page in range(1, max_pages + 1):
            items = self.history_page(store_id, webhook_id, page, state)
            if not items:
                return
            fresh = [i for i in items if parse_time(i.get("created_at")) >= since_ms]
            yield from fresh
            if not fresh:
                return

    def orders(self, store_id: str, *, since_ms: int, statuses: tuple[str, ...] = ("completed",),
               limit: int = ORDERS_PAGE) -> Iterator[dict[str, Any]]:
        """Orders of these statuses created at or after `since_ms`: newest first, cursor `before` the last id seen."""
        before: str | None = None
        while True:
            params: list[tuple[str, str | int]] = [("limit", limit), ("asc", "false")]
            params += [("status", s) for s in statuses]
            if before is not None:
                params.append(("before", before))
            page: list[dict[str, Any]] = self.request("GET", f"/v1/stores/{store_id}/orders", params=params).json()
            if not page:
                return
            for order in page:
                if parse_time(order.get("created_at")) >= since_ms:
                    yield order
            if parse_time(page[-1].get("created_at")) < since_ms or len(page) < limit:
                return
            before = str(page[-1]["id"])


def _detail(response: httpx.Response) -> str:
    """PayNow's error message (PayNowError.message), never the request's headers."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return f"{body.get('code', '')}: {body['message']}"[:200]
    return response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def parse_time(value: Any) -> int:
    """An RFC 3339 date-time (PayNow's `format: date-time`) as epoch milliseconds; 0 when absent or unreadable."""
    import datetime as dt

    if not isinstance(value, str) or not value:
        return 0
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)
