"""HAProxy config generation, stats parsing, and a real HAProxy carrying POSTs past a dead backend."""
from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.local import haproxy
from ops.local.emulators import free_port
from ops.local.process import Process

SERVERS = [haproxy.Server("us-central1", "127.0.0.1", 18081), haproxy.Server("europe-west1", "127.0.0.1", 18082)]


def test_config_has_the_health_checks_retries_and_stats(tmp_path: Path) -> None:
    text = haproxy.render_config(servers=SERVERS, frontend_port=18080, stats_port=18090,
                                 stats_socket=tmp_path / "s.sock")
    for line in ("option httpchk GET /readyz", "inter 500ms", "fall 2 rise 2", "retry-on all-retryable-errors",
                 "retries 3", "option redispatch", "option http-buffer-request", "balance roundrobin",
                 "bind 127.0.0.1:18080", "bind 127.0.0.1:18090", f"stats socket {tmp_path / 's.sock'}",
                 "server us-central1 127.0.0.1:18081 check", "server europe-west1 127.0.0.1:18082 check",
                 "option forwardfor", "source 127.0.0.2",
                 "acl public_path path /webhooks/paynow /api/paynow/webhook /healthz /readyz"):
        assert line in text, line
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    haproxy.check_config(path)  # HAProxy itself accepts it


def test_a_broken_config_is_reported_with_haproxys_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text("frontend x\n    bind 127.0.0.1:1\n    nonsense directive\n")
    with pytest.raises(haproxy.HAProxyError, match="nonsense"):
        haproxy.check_config(path)


def test_no_servers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        haproxy.render_config(servers=[], frontend_port=1, stats_port=2, stats_socket=tmp_path / "s")


def test_parse_stats_keeps_the_backends_servers() -> None:
    csv_text = ("# pxname,svname,stot,status,chkdown,lastchg,hrsp_2xx,hrsp_5xx,\n"
                "webhooks,FRONTEND,10,OPEN,,,,,\n"
                "ingress,us-central1,7,UP,1,12,6,1,\n"
                "ingress,europe-west1,3,DOWN 1/2,2,3,3,0,\n"
                "ingress,BACKEND,10,UP,0,12,9,1,\n")
    us, eu = haproxy.parse_stats(csv_text)
    assert (us.name, us.status, us.check_down, us.sessions, us.responses_2xx) == ("us-central1", "UP", 1, 7, 6)
    assert us.in_rotation and not eu.in_rotation and eu.check_down == 2


SEEN: list[tuple[str, str, str, str | None]] = []  # (method, path, peer, X-Forwarded-For) the live backend got


class _Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # /readyz
        SEEN.append(("GET", self.path, self.client_address[0], self._forwarded()))
        self._answer(200, b'{"status":"ready"}')

    def do_POST(self) -> None:
        SEEN.append(("POST", self.path, self.client_address[0], self._forwarded()))
        self.rfile.read(int(self.headers["content-length"]))
        self._answer(202, b'{"status":"accepted","region":"europe-west1"}')

    def _forwarded(self) -> str | None:
        """All X-Forwarded-For lines as one list, as the ingress reads them (HAProxy adds a line of its own)."""
        lines = self.headers.get_all("x-forwarded-for")
        return ", ".join(lines) if lines else None

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """HAProxy in front of one live backend and one port where nothing listens (a killed region)."""
    SEEN.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = haproxy.Server("us-central1", "127.0.0.1", free_port())
    live = haproxy.Server("europe-west1", "127.0.0.1", server.server_address[1])
    frontend, stats = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    sock = tmp_path / "haproxy.sock"
    config.write_text(haproxy.render_config(servers=[dead, live], frontend_port=frontend, stats_port=stats,
                                            stats_socket=sock))
    process = Process("haproxy", haproxy.command(config), {}, str(tmp_path / "haproxy.log")).start()
    try:
        process.wait_ready(sock.exists, "HAProxy's stats socket", timeout=10, interval=0.05)
        yield f"http://127.0.0.1:{frontend}", sock
    finally:
        process.stop()
        server.shutdown()
        server.server_close()


def test_posts_are_redispatched_past_a_dead_backend_and_it_is_marked_down(lb: tuple[str, Path]) -> None:
    url, sock = lb
    # immediately: HAProxy still believes both are UP, so half the POSTs first hit the dead port and are retried
    answers = [httpx.post(url + "/webhooks/paynow", content=b"{}", timeout=5).status_code for _ in range(20)]
    assert answers == [202] * 20
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = {s.name: s for s in haproxy.read_stats(sock)}
        if states["us-central1"].status == "DOWN":
            break
        time.sleep(0.1)
    assert states["us-central1"].status == "DOWN" and states["us-central1"].check_down >= 1
    assert states["europe-west1"].status == "UP" and states["europe-west1"].responses_2xx == 20
    haproxy.set_state(sock, "europe-west1", "maint")
    assert {s.name: s.status for s in haproxy.read_stats(sock)}["europe-west1"] == "MAINT"
    # no region in rotation: HAProxy's own 503 keeps the contract (JSON error, Retry-After), as an ingress's would
    refused = httpx.post(url + "/webhooks/paynow", content=b"{}", timeout=5)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"] == "unavailable"


def raw_request(url: str, line: str, headers: str = "") -> int:
    """Send one request byte for byte (no client-side normalisation of the path) and return the status."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"{line}\r\nHost: lb\r\n{headers}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


REFUSED = ["POST /admin/drain HTTP/1.1", "POST /admin/undrain HTTP/1.1", "GET /metrics HTTP/1.1",
           "GET /metrics/ HTTP/1.1", "GET /metrics?format=prometheus HTTP/1.1", "POST /%61dmin/drain HTTP/1.1",
           "POST //admin/drain HTTP/1.1", "POST /ADMIN/drain HTTP/1.1",
           "POST /webhooks/paynow/../../admin/drain HTTP/1.1", "POST http://lb/admin/drain HTTP/1.1",
           "GET /openapi.json HTTP/1.1"]


def test_admin_and_metrics_are_not_forwarded_by_the_public_frontend(lb: tuple[str, Path]) -> None:
    url, _ = lb
    assert {line: raw_request(url, line) for line in REFUSED} == {line: 404 for line in REFUSED}
    assert [s for s in SEEN if s[0] == "POST" or s[1] != "/readyz"] == []  # the backend saw none of them


def test_public_paths_pass_and_the_backend_sees_the_client_in_forwarded_for(lb: tuple[str, Path]) -> None:
    url, sock = lb
    assert raw_request(url, "POST /webhooks/paynow HTTP/1.1", "X-Forwarded-For: 6.6.6.6\r\n") == 202
    assert raw_request(url, "POST /api/paynow/webhook?x=1 HTTP/1.1") == 202
    assert raw_request(url, "GET /readyz HTTP/1.1") == 200
    forwarded = [s for s in SEEN if s[1] != "/readyz" or s[3] is not None]
    assert [(m, p) for m, p, _, _ in forwarded] == [("POST", "/webhooks/paynow"), ("POST", "/api/paynow/webhook?x=1"),
                                                    ("GET", "/readyz")]
    # the real client appended after whatever the client wrote
    assert [xff for _, _, _, xff in forwarded] == ["6.6.6.6, 127.0.0.1", "127.0.0.1", "127.0.0.1"]
    deadline = time.monotonic() + 5  # health checks reach /readyz directly, not through the frontend
    while not any(s[1] == "/readyz" and s[3] is None for s in SEEN) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(s[1] == "/readyz" and s[3] is None for s in SEEN)
    assert {peer for _, _, peer, _ in SEEN} == {haproxy.SOURCE_ADDRESS}  # all from HAProxy's own source address
    assert {s.name: s.status for s in haproxy.read_stats(sock)}["europe-west1"] == "UP"
