"""The one harness for a child process in its own process group: start, readiness, stop, kill -9, freeze, readings.

Used by the local stack, the emulators, the drills, the benchmarks and the tests that start real processes. A
process is known by its pid *and* its start time (psutil's `create_time`), so a handle rebuilt from a stale
`stack.json` never signals a stranger that was given the same pid.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGCONT, SIGKILL, SIGSTOP, SIGTERM
from typing import Any

import psutil

STOP_TIMEOUT_S = 10.0


class NotReady(RuntimeError):
    """A process exited, or a readiness condition stayed false, before its deadline; the message has its log tail."""


def start_time(pid: int) -> float | None:
    """When a live process started (seconds since the epoch); None if it is gone or a zombie (killed, unreaped)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def http_ok(url: str, timeout: float = 1.0, headers: dict[str, str] | None = None) -> bool:
    """Health: does a GET of `url` answer 200?"""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(ready: Callable[[], bool], what: str, timeout: float, process: Process | None = None,
             interval: float = 0.2) -> None:
    """Poll `ready` until it holds; NotReady (with the process's log tail) if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and not process.alive():
            raise NotReady(f"{what}: process exited; log {process.log}:\n{process.tail()}")
        if time.monotonic() > deadline:
            tail = f"; log {process.log}:\n{process.tail()}" if process else ""
            raise NotReady(f"{what}: not ready after {timeout:.0f} s{tail}")
        time.sleep(interval)


@dataclass
class Process:
    """A child in its own process group, with its command, environment and log kept for a restart.

    `marker` writes a "==== HH:MM:SS starting" line before each start (a restart appends to the same log, and
    readiness checks read only what follows the last marker); turn it off where the log must hold only the
    child's own output (e.g. JSON lines a test parses).
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log: str
    pid: int = 0
    started: float | None = None  # start_time(pid): the identity of pid
    cwd: str | None = None
    marker: bool = True
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def attached(cls, name: str, pid: int, started: float | None) -> Process:
        """A handle on a process another program started (from a state file), known by pid and start time."""
        return cls(name, [], {}, "", pid, started)

    # -- start and readiness -----------------------------------------------------------------------------------
    def start(self, extra_env: dict[str, str] | None = None) -> Process:
        if extra_env:
            self.env.update(extra_env)
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            if self.marker:
                log.write(f"\n==== {time.strftime('%H:%M:%S')} starting {self.name}: {' '.join(self.argv)}\n"
                          .encode())
                log.flush()
            self._popen = subprocess.Popen(self.argv, env={**os.environ, **self.env}, cwd=self.cwd, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        self.pid = self._popen.pid
        self.started = start_time(self.pid)
        return self

    def wait_ready(self, ready: Callable[[], bool], what: str, timeout: float, interval: float = 0.2) -> None:
        """Poll `ready` while this process lives; NotReady with its log tail if it exits or `timeout` passes."""
        wait_for(ready, what, timeout, self, interval)

    # -- state -------------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return self.pid > 0 and self.started is not None and start_time(self.pid) == self.started

    def poll(self) -> int | None:
        """Our own child's exit status, None while it runs (or for an attached process, which is not ours to reap)."""
        return self._popen.poll() if self._popen is not None else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for our own child to exit and return its status (subprocess.TimeoutExpired after `timeout`)."""
        return self._popen.wait(timeout=timeout) if self._popen is not None else None

    def tail(self, chars: int = 3000) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "argv": self.argv, "env": self.env, "log": self.log, "pid": self.pid,
                "started": self.started}

    # -- signals to the whole group ----------------------------------------------------------------------------
    def _group_is_ours(self) -> bool:
        """Is the group `pid` still ours? Yes while its leader (alive or an unreaped zombie) has our start time, or
        once the leader is gone: a pid is not handed out again while a group of that id has members. No if a
        stranger now has the pid."""
        if self.pid <= 0:
            return False
        try:
            created = psutil.Process(self.pid).create_time()
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False
        return created == self.started if self.started is not None else self._popen is not None

    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group, if its leader is still this process."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def _kill_group(self) -> None:
        if self._group_is_ours():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, SIGKILL)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=5)

    def _wait_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the group (a graceful drain), SIGKILL it after `timeout` and whatever of it outlived the leader."""
        if self.pid <= 0:
            return
        self.signal(SIGTERM)
        self._wait_gone(timeout)
        self._kill_group()

    def kill(self, sig: int = SIGKILL) -> None:
        """A drill's kill -9 (or `sig`): signal the group, then SIGKILL every straggler, so nothing of it survives."""
        self.signal(sig)
        self._wait_gone(STOP_TIMEOUT_S)
        self._kill_group()

    def freeze(self) -> None:
        """SIGSTOP the whole group (the process hangs, holding its sockets)."""
        self.signal(SIGSTOP)

    def thaw(self) -> None:
        self.signal(SIGCONT)

    # -- readings ----------------------------------------------------------------------------------------------
    def _members(self) -> list[psutil.Process]:
        """Every live process of the group (the leader and whatever it spawned)."""
        if not self._group_is_ours():
            return []
        members = []
        for process in psutil.process_iter():
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if os.getpgid(process.pid) == self.pid:
                    members.append(process)
        return members

    def rss_bytes(self) -> int:
        """Resident memory of the whole group."""
        total = 0
        for member in self._members():
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total

    def threads(self) -> int:
        """Threads of the whole group (the Pub/Sub emulator's JVM keeps one per ordering key it has seen)."""
        total = 0
        for member in self._members():
            with contextlib.suppress(psutil.Error):
                total += member.num_threads()
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU the leader has used so far."""
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)
