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
