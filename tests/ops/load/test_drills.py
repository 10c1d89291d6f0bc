"""Every drill in its short setting against one shared two-region stack (real emulators, ingresses, HAProxy,
pipelines), plus the `paynow` commands that drive a running stack, and `paynow up` / `down` leaving nothing behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from ops import cli
from ops.admin import audit
from ops.load import drill_failover, drills
from ops.local.process import start_time
from ops.local.stack import Stack
from tests.ops.load.stacks import running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RATE = 15.0


@pytest.fixture(scope="module")
def stack(emulator_hosts: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack("drills", tmp_path_factory)


def _run(stack: Stack, name: str, **kwargs: float) -> drills.Result:
    console = Console(width=160, record=True)
    (result,) = drills.run_drills(stack, [name], console=console, **kwargs)  # type: ignore[arg-type]
    print(console.export_text())
    assert result.error is None, result.error
    return result


def _value(result: drills.Result, name: str) -> str:
    return result.figure(name).value


def test_stack_file_describes_the_running_stack(stack: Stack) -> None:
    info = json.loads(stack.stack_file.read_text())
    assert info["target"].startswith("http://127.0.0.1:") and info["lb"]["statsSocket"]
    assert set(info["ingress"]) == set(info["pipelines"]) == {"us-central1", "europe-west1"}
    assert info["webhookSecret"] == stack.secret and info["project"] == stack.config.project
    assert info["subscription"].endswith("/subscriptions/paynow-events-pipeline")
    assert info["emulators"]["pubsub"] and info["emulators"]["firestore"]
    assert all(start_time(p["pid"]) == p["started"] for p in info["processes"].values())
    assert oct(stack.stack_file.stat().st_mode & 0o777) == "0o600"
    env_file = stack.home / "config" / "ingress-europe-west1.env"
    assert "REGION=europe-west1" in env_file.read_text() and oct(env_file.stat().st_mode & 0o777) == "0o600"


def test_happy(stack: Stack) -> None:
    result = _run(stack, "happy", duration=6, rate=RATE)
    assert result.passed
    assert _value(result, "failed webhooks (no 2xx after PayNow's retries)") == "0"
    assert int(_value(result, "webhooks sent")) >= 0.9 * 6 * RATE
    # judged by the independent model (ops/load/ledger_model.py) fed the deliveries the log says were accepted
    wallets = _value(result, f"audit: {audit.MODEL_WALLETS}")
    assert wallets.split("/")[0] == wallets.split("/")[1] != "0"
    assert result.figure(f"audit: {audit.MODEL_EXTRA}").ok and result.figure(f"audit: {audit.AGGREGATES}").ok


def test_schema(stack: Stack) -> None:
    result = _run(stack, "schema", duration=6, rate=RATE)
    assert result.passed
    v1 = result.figure("v1 in the DLQ as drop_incompatible").value
    assert v1.split("/")[0] == v1.split("/")[1] != "0"


def test_webhook_failover(stack: Stack) -> None:
    result = _run(stack, "webhook-failover", duration=15, rate=RATE)
    assert result.passed
    detect = result.figure("time until all traffic on europe-west1 (LB marks us-central1 DOWN)")
    assert float(detect.value.split()[0]) <= drill_failover.FAILOVER_TARGET_S
    assert int(_value(result, "answers by us-central1 after it came back")) > 0


def test_worker_failover(stack: Stack) -> None:
    result = _run(stack, "worker-failover", duration=9, rate=RATE)
    assert result.passed
    assert int(_value(result, "events committed by the standby (europe-west1) after the kill")) > 0
    assert stack.processes["pipeline-us-central1"].alive()  # brought back for the next drills


LATENCY = ("webhook ACK p95 (ingress histogram)", "worker p95 (publish → commit)")


def test_load(stack: Stack) -> None:
    result = _run(stack, "load", duration=8, normal_rate=RATE)  # 2 × normal
    assert result.figure("offered rate").value == f"{2 * RATE:g}/s for 8 s"
    # latency is measured and judged by the drill, but 2 cores shared with other suites make it noisy in CI:
    # here it must be measured; everything else (no failure, no loss, no memory growth) must pass
    for name in LATENCY:
        assert result.figure(name).value.endswith(" ms"), name
    assert all(f.ok is not False for f in result.figures if f.name not in LATENCY), result.table()
    # 2 ingresses, haproxy, the fake PayNow API, 2 pipelines, prometheus
    assert sum(f.name.startswith("RSS ") for f in result.figures) == 7


def test_hot_wallet(stack: Stack) -> None:
    """One customer at 50 webhooks/s (issue 20): every event committed once into one wallet, none dead-lettered for
    contention; the latency is measured (judged by the drill, noisy here like test_load's)."""
    result = _run(stack, "hot-wallet", duration=8)
    assert result.figure("offered rate").value == "50/s for 8 s, one customer"
    assert _value(result, "distinct uids the deliveries credit") == "1"
    assert int(_value(result, "webhooks sent")) >= 0.9 * 8 * 50
    assert _value(result, "events dead-lettered for contention (write_failed, wedged_key)") == "0"
    assert result.figure("worker p95 (publish → commit)").value.endswith(" ms")
    assert all(f.ok is not False for f in result.figures if f.name not in LATENCY), result.table()
    wallets = _value(result, f"audit: {audit.MODEL_WALLETS}")
    assert wallets == "1/1", wallets


def test_dlq_replay(stack: Stack) -> None:
    result = _run(stack, "dlq-replay")  # also replays the unmapped customers' orders the drills above sent
    assert result.passed
    assert result.figure("ledger entries for the order").value == "1"
    assert _value(result, "balance after replaying it again") == "300"


def test_rollback(stack: Stack) -> None:
    result = _run(stack, "rollback", duration=30, rate=RATE)
    assert result.passed
    assert _value(result, "answers by europe-west1 while rolled back") == "0"
    assert stack.processes["ingress-europe-west1"].env["MULTI_REGION_ENABLED"] == "true"


def test_cli_drives_the_running_stack(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    log = stack.traffic_dir / "cli-traffic.jsonl"
    assert cli.main(["traffic", "--rate", "10", "--duration", "3", "--log", str(log)]) == 0
    assert len([r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "webhook"]) >= 25
    assert cli.main(["status", "--once"]) == 0
    out = capsys.readouterr().out
    assert "us-central1" in out and "europe-west1" in out and "schema compatibility rate" in out
    time.sleep(3)
    assert cli.main(["dlq", "list", "--verdict", "drop_incompatible", "--limit", "3"]) == 0
    assert "drop_incompatible" in capsys.readouterr().out
    assert cli.main(["audit", "--traffic-log", str(log), "--wait", "30"]) == 0, capsys.readouterr().out
    assert "0 still unaccounted" in capsys.readouterr().out


def test_audit_of_everything_the_drills_sent(stack: Stack) -> None:
    result = _run(stack, "audit")  # after the replays too: nothing accepted is lost
    assert result.passed
    assert _value(result, "audit: accepted events neither processed nor in the DLQ (lost)") == "0"
    assert int(_value(result, "traffic logs audited")) >= 7
    assert result.figure("planted drifts detected (scratch project)").value == "3/3"
    assert result.figure(f"audit: {audit.MODEL_WALLETS}").ok and result.figure(f"audit: {audit.VERDICTS}").ok


def test_up_and_down_leave_nothing_running(emulator_hosts: tuple[str, str], tmp_path: Path) -> None:
    env = {**os.environ, "PAYNOW_HOME": str(tmp_path), "COLUMNS": "160"}
    up = subprocess.Popen([sys.executable, "-m", "ops.cli", "up", "--no-status", "--rate", "5",
                           "--project", f"updown-{uuid.uuid4().hex[:8]}"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        stack_file = tmp_path / "stack.json"
        while time.monotonic() < deadline:
            if stack_file.exists() and "traffic" in json.loads(stack_file.read_text())["processes"]:
                break
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            time.sleep(0.5)
        pids = [p["pid"] for p in json.loads(stack_file.read_text())["processes"].values()]
        assert len(pids) == 8  # 2 ingresses, haproxy, fake PayNow API, 2 pipelines, prometheus, traffic
        down = subprocess.run([sys.executable, "-m", "ops.cli", "down"], env=env, capture_output=True, text=True,
                              timeout=90)
        assert down.returncode == 0 and "supervisor" in down.stdout
        assert up.wait(timeout=30) == 0
        assert not stack_file.exists()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # no process of any group is left
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(timeout=30)
        if up.stdout:
            up.stdout.close()
