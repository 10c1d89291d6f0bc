"""`paynow demo`: one region end to end, the tables it prints, and nothing left running afterwards."""
from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from ops import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _children() -> set[int]:
    """Processes whose parent is this test process (the demo's ingress and pipeline would be)."""
    return {child.pid for child in psutil.Process().children()}


def test_demo_prints_wallets_ledger_and_dlq_then_stops_everything(
        emulator_hosts: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PAYNOW_HOME", str(tmp_path))
    before = _children()
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = {" ".join(line.replace("│", " ").split()) for line in out.splitlines()}
    assert "the same webhook again (duplicate) evt_demo_1 ON_ORDER_COMPLETED 200 accepted us-central1" in rows
    # 50 + 3 × 20 (the subscription line is not the order's) + cycle 1 of a 50-point subscription, credited once;
    # the last column is the independent model's wallet
    assert "user_alice 160 160 160" in rows
    assert "user_bob 0 0 0" in rows  # bob's order (via his mapping) and its completed refund net to zero
    assert any(r.startswith("user_bob reversal:ord_demo_2 -150 reversal evt_demo_5") for r in rows)
    assert any(r.startswith("user_alice subscription:sub_demo_1:1 50 subscription evt_demo_3") for r in rows)
    assert not any("evt_demo_4" in r and "reversal" in r for r in rows)  # a processing refund reverses nothing
    assert any(r.startswith("evt_demo_v1 drop_incompatible") for r in rows)
    assert any(r.startswith("evt_demo_7 unmapped_customer") for r in rows)
    assert _children() <= before
    assert not (tmp_path / "demo" / "stack.json").exists()
