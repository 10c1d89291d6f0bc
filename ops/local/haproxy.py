"""HAProxy as the local global load balancer: its config from ops/local/haproxy.cfg, and its stats over the socket."""
from __future__ import annotations

import csv
import io
import shutil
import socket
import string
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ingress.responses import RETRY_AFTER_UNAVAILABLE

BACKEND = "ingress"
# HAProxy connects to the ingresses from this loopback address (Linux routes all of 127.0.0.0/8 to lo): the
# ingresses trust X-Forwarded-For from it alone, and HAProxy's appended entry names the real client.
SOURCE_ADDRESS = "127.0.0.2"
# What the public frontend forwards (exact paths, query aside): the webhook (DESIGN §1) and health. Admin and
# metrics are for operators, who reach each ingress directly.
PUBLIC_PATHS = ("/webhooks/paynow", "/api/paynow/webhook", "/healthz", "/readyz")


class HAProxyError(RuntimeError):
    """HAProxy is missing, rejected its config, or its stats socket did not answer."""


@dataclass(frozen=True)
class Server:
    """One backend server: a region's ingress."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class ServerStats:
    """A server's line of `show stat`: state, and the counters the status view and drills read."""

    name: str
    status: str  # UP, DOWN, "UP 1/2", "DOWN 1/2", MAINT, DRAIN, no check ...
    check_down: int  # UP -> DOWN transitions seen by the health checks
    last_change_s: int  # seconds since the last state change
    sessions: int  # requests sent to this server in total
    responses_2xx: int
    responses_5xx: int

    @property
    def in_rotation(self) -> bool:
        """"UP 1/2" (one failed check) still takes traffic; "DOWN 1/2" (one good check) does not yet."""
        return self.status.startswith("UP") or self.status == "no check"


def render_config(*, servers: list[Server], frontend_port: int, stats_port: int, stats_socket: Path,
                  host: str = "127.0.0.1") -> str:
    if not servers:
        raise ValueError("the load balancer needs at least one server")
    template = string.Template(resources.files("ops.local").joinpath("haproxy.cfg").read_text())
    lines = "\n".join(f"    server {s.name} {s.host}:{s.port} check" for s in servers)
    return template.substitute(servers=lines, frontend_port=frontend_port, stats_port=stats_port,
                               stats_socket=str(stats_socket), host=host, source_address=SOURCE_ADDRESS,
                               public_paths=" ".join(PUBLIC_PATHS), retry_after=RETRY_AFTER_UNAVAILABLE)


def executable() -> str:
    path = shutil.which("haproxy")
    if path is None:
        raise HAProxyError("haproxy not found on PATH (Debian: apt-get install haproxy; `make run` installs it)")
    return path


def check_config(path: Path) -> None:
    """`haproxy -c`: raise HAProxyError with its own message when the config is invalid."""
    result = subprocess.run([executable(), "-c", "-f", str(path)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise HAProxyError(f"haproxy rejected {path}:\n{result.stdout}{result.stderr}")


def command(path: Path) -> list[str]:
    """Foreground (-db) so the process group we start is HAProxy itself and its log goes to our file."""
    return [executable(), "-db", "-f", str(path)]


def socket_command(stats_socket: Path, line: str, *, timeout: float = 2.0) -> str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise HAProxyError(f"stats socket {stats_socket}: {exc}") from None
    return b"".join(chunks).decode()


def parse_stats(text: str, backend: str = BACKEND) -> list[ServerStats]:
    """Parse `show stat` CSV into the backend's servers (BACKEND/FRONTEND summary lines are skipped)."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    out = []
    for row in rows:
        if row.get("pxname") != backend or row.get("svname") in ("BACKEND", "FRONTEND"):
            continue
        out.append(ServerStats(
            name=row["svname"], status=row["status"], check_down=_int(row.get("chkdown")),
            last_change_s=_int(row.get("lastchg")), sessions=_int(row.get("stot")),
            responses_2xx=_int(row.get("hrsp_2xx")), responses_5xx=_int(row.get("hrsp_5xx"))))
    return out


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def read_stats(stats_socket: Path) -> list[ServerStats]:
    return parse_stats(socket_command(stats_socket, "show stat"))


def set_state(stats_socket: Path, server: str, state: str) -> None:
    """Operator's manual switch: `ready`, `drain` or `maint` for one region's server."""
    if state not in ("ready", "drain", "maint"):
        raise ValueError(f"unknown server state {state!r}")
    answer = socket_command(stats_socket, f"set server {BACKEND}/{server} state {state}").strip()
    if answer:
        raise HAProxyError(answer)
