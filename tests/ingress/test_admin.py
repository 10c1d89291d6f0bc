"""Admin refusals: 401 / 403 as before, each one logged with the client's address and the path, never the token."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ingress import create_app
from ingress.logging import CloudLoggingFormatter
from tests.ingress.conftest import ADMIN_TOKEN, RecordingPublisher, make_settings
from tests.ingress.test_ratelimit import Peer

WRONG_TOKEN = "wrong-token-never-to-be-logged"


@pytest.fixture
def admin_log() -> Iterator[io.StringIO]:
    """The ingress.admin logger's lines as the production formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter(region="europe-west1", service="paynow-ingress"))
    logger = logging.getLogger("ingress.admin")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def behind_proxy() -> Iterator[TestClient]:
    """Requests arriving from the load balancer (127.0.0.2, one hop), which appends the client to X-Forwarded-For."""
    app = create_app(make_settings(FORWARDED_HOPS="1"), publisher=RecordingPublisher())
    with TestClient(Peer(app, "127.0.0.2")) as client:
        yield client


@pytest.mark.parametrize(("authorization", "status", "code"), [
    (None, 401, "unauthorized"),
    ("Basic abc", 401, "unauthorized"),
    (f"Bearer {WRONG_TOKEN}", 403, "forbidden"),
])
@pytest.mark.parametrize("path", ["/admin/drain", "/admin/undrain"])
def test_each_refusal_is_logged_with_client_and_path_but_no_token(
        behind_proxy: TestClient, admin_log: io.StringIO, path: str, authorization: str | None, status: int,
        code: str) -> None:
    headers = {"x-forwarded-for": "6.6.6.6, 198.51.100.9"}
    if authorization:
        headers["authorization"] = authorization
    response = behind_proxy.post(path, headers=headers)
    assert response.status_code == status and response.json()["error"] == code
    [line] = [json.loads(text) for text in admin_log.getvalue().splitlines()]
    assert line["severity"] == "WARNING" and line["message"] == "admin request refused"
    assert (line["clientIp"], line["path"], line["status"], line["error"]) == ("198.51.100.9", path, status, code)
    assert "peer 127.0.0.2" in line["detail"]
    assert WRONG_TOKEN not in admin_log.getvalue() and ADMIN_TOKEN not in admin_log.getvalue()


def test_an_accepted_admin_call_logs_no_refusal(behind_proxy: TestClient, admin_log: io.StringIO) -> None:
    response = behind_proxy.post("/admin/drain", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200 and response.json()["status"] == "draining"
    assert admin_log.getvalue() == ""
