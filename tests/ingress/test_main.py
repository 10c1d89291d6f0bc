"""`python -m ingress` as a process: bad config exits naming the setting; SIGTERM drains, answers what is in
flight, flushes and exits; every 202 it gave is on the subscription."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ops.local.emulators import free_port
from ops.local.process import Process, http_ok
from ops.local.topology import Topology
from tests.ingress.conftest import BASE_ENV, WEBHOOK, order_body, signed_headers
from tests.ingress.test_pubsub_integration import pull

ROOT = Path(__file__).resolve().parents[2]


def start(env: dict[str, str], log: Path) -> Process:
    """`python -m ingress` with the harness; its log holds only the ingress's own JSON lines."""
    return Process("ingress", [sys.executable, "-m", "ingress"], env, str(log), cwd=str(ROOT), marker=False).start()


def test_invalid_configuration_exits_2_naming_the_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "ingress"], cwd=ROOT, capture_output=True, timeout=60,
                            env={**os.environ, **BASE_ENV, "PUBLISH_TIMEOUT": "soon"})
    assert result.returncode == 2
    line = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert line["setting"] == "PUBLISH_TIMEOUT" and line["message"].startswith("invalid configuration: PUBLISH_TIMEOUT")


async def _post_all(base: str, bodies: list[bytes], process: Process) -> list[tuple[str, int]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async def one(body: bytes) -> tuple[str, int]:
            response = await client.post(WEBHOOK, content=body, headers=signed_headers(body))
            return json.loads(body)["event_id"], response.status_code

        in_flight = [asyncio.create_task(one(b)) for b in bodies[:20]]
        await asyncio.sleep(0.02)
        process.signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        readyz = (await client.get("/readyz")).status_code
        late = await asyncio.gather(*(one(b) for b in bodies[20:]))
        return [*await asyncio.gather(*in_flight), *late, ("readyz", readyz)]


def test_sigterm_drains_then_exits_with_everything_acknowledged_published(topology: Topology,
                                                                           tmp_path: Path) -> None:
    port = free_port()
    env = {**BASE_ENV, "PORT": str(port), "PUBSUB_TOPIC": topology.topic, "GOOGLE_CLOUD_PROJECT": topology.project,
           "DRAIN_SECONDS": "1", "LOG_LEVEL": "INFO"}
    process = start(env, tmp_path / "ingress.log")
    base = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(lambda: http_ok(f"{base}/readyz"), "ingress /readyz", 30)
        bodies = [order_body(f"evt-term-{i}", uid=f"user-{i % 5}") for i in range(40)]
        results = asyncio.run(_post_all(base, bodies, process))
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    answers = dict(results)
    assert answers.pop("readyz") == 503
    assert set(answers.values()) <= {202, 503}  # every request in flight at SIGTERM got an answer
    assert all(answers[f"evt-term-{i}"] == 503 for i in range(20, 40))  # after SIGTERM: the LB retries elsewhere
    acknowledged = {event for event, status in answers.items() if status == 202}
    published = {m.attributes["eventId"] for m in pull(topology, expect=len(acknowledged))}
    assert acknowledged <= published
    log = [json.loads(line) for line in (tmp_path / "ingress.log").read_text().splitlines()]
    assert all({"severity", "message", "region"} <= set(entry) for entry in log)
    assert any(entry["message"] == "draining" for entry in log)


def test_the_local_stack_settings_as_a_process_bound_secrets_hops_and_the_body_deadline(topology: Topology,
                                                                                         tmp_path: Path) -> None:
    """`python -m ingress` with the local stack's per-type variables and hops (ops/local/stack.py bound_secrets, as
    Cloud Run gets them, without the stack's extra bare copy): each type verifies with its own bound secret only, no
    warning about bare secrets, and a slow client gets 408 within BODY_TIMEOUT."""
    import socket
    import time

    from ops.local.stack import LOCAL_SETTINGS, bound_secrets
    from schemas import deliveries, signing

    port = free_port()
    env = {**bound_secrets("whsec_local_orders"), **LOCAL_SETTINGS, "REGION": "europe-west1", "PORT": str(port),
           "PUBSUB_TOPIC": topology.topic, "GOOGLE_CLOUD_PROJECT": topology.project, "BODY_TIMEOUT": "1",
           "PAYNOW_WEBHOOK_SECRETS_ON_REFUND": "whsec_local_refunds", "LOG_LEVEL": "INFO"}
    process = start(env, tmp_path / "ingress.log")
    base = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(lambda: http_ok(f"{base}/readyz"), "ingress /readyz", 30)
        order = order_body("evt-bound-1")
        assert httpx.post(base + WEBHOOK, content=order,
                          headers=signing.signed_headers("whsec_local_orders", order)).status_code == 202
        forged = order_body("evt-bound-2")
        refused = httpx.post(base + WEBHOOK, content=forged, headers=signing.signed_headers("whsec_local_refunds",
                                                                                              forged))
        assert refused.status_code == 401 and refused.json()["error"] == "secret_bound_to_other_event_type"
        refund = deliveries.encode(deliveries.refund("evt-bound-3", "ref_1", "ord_1", "completed"))
        assert httpx.post(base + WEBHOOK, content=refund,
                          headers=signing.signed_headers("whsec_local_refunds", refund)).status_code == 202
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"POST {WEBHOOK} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         f"content-length: 100\r\n\r\n{{".encode())
            sock.settimeout(5)
            started = time.monotonic()
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 4
        deadline = time.monotonic() + 10  # the access line is written after the answer is sent: wait for it
        while "body_timeout" not in (tmp_path / "ingress.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.kill()
    log = [json.loads(line) for line in (tmp_path / "ingress.log").read_text().splitlines()]
    assert not [e for e in log if e["message"] == "webhook secrets not bound to an event type"]
    assert "whsec_local" not in (tmp_path / "ingress.log").read_text()
    [slow] = [e for e in log if e.get("error") == "body_timeout"]
    assert slow["status"] == 408 and slow["clientIp"] == "127.0.0.1"  # no X-Forwarded-For: too few hops, the peer
