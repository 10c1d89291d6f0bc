"""The body limit inside the whole app: MAX_BODY_BYTES, and a truncated body answered (and logged) as such."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from starlette.testclient import TestClient
from starlette.types import Message

from ingress import create_app
from tests.ingress.conftest import WEBHOOK, RecordingPublisher, make_settings, order_body, signed_headers


def delivery(size: int | None = None) -> bytes:
    """The one place a valid PayNow delivery is built in this file, padded to exactly `size` bytes if given."""
    body = order_body("evt-body")
    if size is None:
        return body
    body = body[:-1] + b', "pad": "'
    return body + b"x" * (size - len(body) - 2) + b'"}'


@pytest.mark.parametrize(("size", "status"), [(4096, 202), (4097, 413)])
def test_max_body_bytes_is_the_limit(size: int, status: int) -> None:
    publisher = RecordingPublisher()
    with TestClient(create_app(make_settings(MAX_BODY_BYTES="4096"), publisher=publisher)) as client:
        body = delivery(size)
        response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
    assert len(body) == size and response.status_code == status
    if status == 413:
        assert response.json() == {"error": "payload_too_large", "detail": "body exceeds 4096 bytes"}
    assert len(publisher.messages) == (status == 202)


def test_a_body_cut_off_by_a_disconnect_is_400_incomplete_body_not_a_bad_signature(
        caplog: pytest.LogCaptureFixture) -> None:
    publisher = RecordingPublisher()
    app = create_app(make_settings(), publisher=publisher)
    app.state.ingress.publisher = publisher  # what the lifespan does; this test drives the ASGI app by hand
    body = delivery()
    half = len(body) // 2
    incoming: list[Message] = [{"type": "http.request", "body": body[:half], "more_body": True},
                               {"type": "http.disconnect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(k.encode(), v.encode()) for k, v in {**signed_headers(body), "content-length": str(len(body))}.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": WEBHOOK, "raw_path": WEBHOOK.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("203.0.113.7", 40000), "server": ("127.0.0.1", 8080)}
    with caplog.at_level(logging.INFO, logger="ingress.webhook"):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {
        "error": "incomplete_body", "detail": f"the client went away after {half} bytes, before the body was complete"}
    assert publisher.messages == []
    [record] = [r for r in caplog.records if r.name == "ingress.webhook"]
    assert (record.levelname, record.error, record.status) == ("WARNING", "incomplete_body", 400)  # type: ignore[attr-defined]
