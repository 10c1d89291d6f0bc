"""Helpers for ingress tests: settings, signed requests, PayNow bodies and in-memory publishers."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ingress import Settings, create_app
from ingress.publisher import PublishUnavailable
from schemas import deliveries, signing

SECRET = b"whsec-current-0123456789"
OLD_SECRET = b"whsec-previous-9876543210"
ADMIN_TOKEN = "admin-token-abc"
WEBHOOK = "/webhooks/paynow"
LEGACY = "/api/paynow/webhook"
BASE_ENV = {"PAYNOW_WEBHOOK_SECRETS": f"{SECRET.decode()},{OLD_SECRET.decode()}", "ADMIN_TOKEN": ADMIN_TOKEN,
            "REGION": "europe-west1"}


def make_settings(**overrides: str) -> Settings:
    return Settings.from_env({**BASE_ENV, **overrides})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def order_body(event_id: str = "1001", *, uid: str | None = "user-1", customer: str = "3001",
               lines: int = 1) -> bytes:
    """A real ON_ORDER_COMPLETED delivery (built from PayNow's definitions), as PayNow puts it on the wire."""
    order_lines = [deliveries.order_line(str(i), "459935272365195264") for i in range(lines)]
    return deliveries.encode(deliveries.order_completed(event_id, f"9{event_id}", customer, order_lines, uid=uid))


def signed_headers(body: bytes, *, secret: bytes = SECRET, timestamp_ms: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    return signing.signed_headers(secret, body, timestamp_ms=timestamp_ms, content_type=content_type)


class RecordingPublisher:
    """Keeps every published message; `fail` makes publish raise PublishUnavailable like a Pub/Sub outage."""

    def __init__(self, *, fail: bool = False) -> None:
        self.messages: list[tuple[bytes, dict[str, str], str]] = []
        self.fail = fail
        self.healthy = True
        self.paused_keys = 0
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def publish(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str:
        if self.fail:
            self.healthy = False
            raise PublishUnavailable("DeadlineExceeded: simulated outage")
        self.messages.append((data, attributes, ordering_key))
        return str(len(self.messages))

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def client(publisher: RecordingPublisher) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(), publisher=publisher)) as test_client:
        yield test_client
