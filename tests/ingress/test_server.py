"""The ingress under real uvicorn on a loopback port (the server config `python -m ingress` uses): a slow body gets
408 within BODY_TIMEOUT and its request ends; uvicorn's own proxy-header handling does not pick the client."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn

from ingress import create_app
from ingress.__main__ import server_config
from ops.local.emulators import LOOPBACK, free_port
from tests.ingress.conftest import WEBHOOK, RecordingPublisher, make_settings, order_body, signed_headers

Serve = Callable[..., str]
pytestmark = pytest.mark.integration  # starts a server


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start the ingress app with these settings under uvicorn (uvloop + httptools) on 127.0.0.1; its base URL."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: str) -> str:
        port = free_port()
        config = make_settings(HOST=LOOPBACK, PORT=str(port), **settings)
        server = uvicorn.Server(server_config(create_app(config, publisher=RecordingPublisher()), config))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        running.append((server, thread))
        return f"http://{LOOPBACK}:{port}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _read_response(sock: socket.socket, limit: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (True) or `limit` seconds pass (False)."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _responses(base: str) -> str:
    return httpx.get(f"{base}/metrics").text


def test_a_slow_body_gets_408_within_the_deadline_and_frees_the_request(serve: Serve) -> None:
    base = serve(BODY_TIMEOUT="1")
    body = order_body("slow-1")
    head = (f"POST {WEBHOOK} HTTP/1.1\r\nhost: {LOOPBACK}\r\ncontent-length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in signed_headers(body).items()) + "\r\n").encode()
    with socket.create_connection((LOOPBACK, _port(base))) as sock:
        started = time.monotonic()
        sock.sendall(head + body[:20])  # then nothing: a slow (or stuck) client
        answer, closed = _read_response(sock, limit=6)
        elapsed = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:200]
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert json.loads(payload) == {"error": "body_timeout",
                                   "detail": "the body was not received within 1 s (20 bytes arrived)"}
    assert b"connection: close" in headers.lower()
    assert closed and 0.9 <= elapsed < 4  # the request ended, and the server let the connection go
    assert 'paynow_webhook_responses_total{reason="body_timeout",region="europe-west1",status="408"} 1.0' in (
        _responses(base))
    # the same delivery sent at once is taken
    assert httpx.post(base + WEBHOOK, content=body, headers=signed_headers(body)).status_code == 202


def test_a_body_trickling_in_past_the_deadline_is_cut_off(serve: Serve) -> None:
    """The bound is on the whole body, not on each read: a byte a second keeps no request alive."""
    base = serve(BODY_TIMEOUT="1.5")
    body = order_body("slow-2")
    head = (f"POST {WEBHOOK} HTTP/1.1\r\nhost: {LOOPBACK}\r\ncontent-length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in signed_headers(body).items()) + "\r\n").encode()
    with socket.create_connection((LOOPBACK, _port(base))) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answer = b""
        for i in range(8):
            try:
                sock.sendall(body[i:i + 1])
            except OSError:  # the server closed the connection after its 408
                break
            answer, _ = _read_response(sock, limit=0.5)
            if answer:
                break
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert elapsed < 3.5


def test_uvicorn_does_not_take_the_client_from_forwarded_headers(serve: Serve) -> None:
    """The peer here is 127.0.0.1, uvicorn's default FORWARDED_ALLOW_IPS: with its proxy headers on, each request
    would be charged to the X-Forwarded-For it carries, and rewriting that header would buy a fresh budget."""
    base = serve(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1")
    junk = {"content-type": "application/json", "paynow-timestamp": "1700000000000", "paynow-signature": "AAAA"}
    statuses = [httpx.post(base + WEBHOOK, content=b"{}", headers={**junk, "x-forwarded-for": f"198.51.100.{i}"})
                .status_code for i in range(3)]
    assert statuses == [401, 429, 429]


def test_behind_two_hops_a_spoofed_left_entry_is_not_the_client(serve: Serve) -> None:
    base = serve(RATE_LIMIT_BURST="1", RATE_LIMIT_PER_MINUTE="1", FORWARDED_HOPS="2")
    junk = {"content-type": "application/json", "paynow-timestamp": "1700000000000", "paynow-signature": "AAAA"}

    def post(forwarded: str) -> int:
        return httpx.post(base + WEBHOOK, content=b"{}", headers={**junk, "x-forwarded-for": forwarded}).status_code

    assert [post(f"6.6.6.{i}, 203.0.113.66, 34.120.1.2") for i in range(3)] == [401, 429, 429]
    assert post("203.0.113.67, 34.120.1.2") == 401  # another client behind the same LB
