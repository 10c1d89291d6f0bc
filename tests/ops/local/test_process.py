"""The process harness with real children: the whole group stops, a stale pid is left alone, freeze and readings."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from ops.local.process import NotReady, Process, start_time

# A leader that spawns a grandchild in its own group, prints both pids, then sleeps.
FAMILY = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print('family', c.pid, flush=True); time.sleep(60)")


def _family(tmp_path: Path) -> tuple[Process, int]:
    process = Process("family", [sys.executable, "-c", FAMILY], {}, str(tmp_path / "family.log")).start()
    process.wait_ready(lambda: "family " in process.tail(), "family", 20, 0.05)
    return process, int(process.tail().split("family ")[1].split()[0])


def test_stop_ends_the_whole_group_and_reaps_the_leader(tmp_path: Path) -> None:
    process, grandchild = _family(tmp_path)
    assert os.getpgid(grandchild) == process.pid and process.alive()
    process.stop(timeout=5)
    assert process.poll() is not None and not process.alive()
    assert psutil.wait_procs([psutil.Process(grandchild)], timeout=5)[1] == []  # killed, then reaped by init
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing of the group is left, the grandchild included
    assert "==== " in Path(process.log).read_text()  # the restart marker before the child's output


def test_a_stale_pid_never_signals_the_process_that_now_has_it(tmp_path: Path) -> None:
    process, _ = _family(tmp_path)
    try:
        stale = Process.attached("stale", process.pid, (process.started or 0) - 1.0)  # same pid, earlier start
        assert not stale.alive()
        stale.kill()
        stale.stop()
        stale.freeze()
        assert process.alive() and psutil.Process(process.pid).status() != psutil.STATUS_STOPPED
        assert stale.rss_bytes() == 0
        same = Process.attached("same", process.pid, start_time(process.pid))  # e.g. rebuilt from stack.json
        assert same.alive()
        same.kill()
        assert not same.alive() and process.wait(timeout=5) is not None
    finally:
        process.kill()


def test_freeze_thaw_and_readings_cover_the_group(tmp_path: Path) -> None:
    process, grandchild = _family(tmp_path)
    try:
        assert process.cpu_seconds() > 0
        process.freeze()
        time.sleep(0.1)
        assert {psutil.Process(p).status() for p in (process.pid, grandchild)} == {psutil.STATUS_STOPPED}
        # frozen, so the memory holds still: the group's RSS is the leader's plus the grandchild's
        assert process.rss_bytes() == sum(psutil.Process(p).memory_info().rss for p in (process.pid, grandchild))
        process.thaw()
        time.sleep(0.1)
        assert psutil.STATUS_STOPPED not in {psutil.Process(p).status() for p in (process.pid, grandchild)}
    finally:
        process.kill()


def test_a_child_that_exits_is_not_ready_and_its_log_says_why(tmp_path: Path) -> None:
    process = Process("fails", [sys.executable, "-c", "raise SystemExit('bad setting FOO')"], {},
                      str(tmp_path / "fails.log"), marker=False).start()
    with pytest.raises(NotReady, match=r"process exited(?s:.)*bad setting FOO"):
        process.wait_ready(lambda: False, "fails", 20)
    assert process.wait(timeout=5) == 1 and Path(process.log).read_text() == "bad setting FOO\n"
