"""Start, probe and stop the Google Cloud CLI's Pub/Sub and Firestore emulators on free loopback ports."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


class EmulatorUnavailable(RuntimeError):
    """The Google Cloud CLI, an emulator component or Java is missing, or an emulator did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def sdk_root() -> Path:
    """The Google Cloud SDK install that holds the emulator components (CLOUDSDK_ROOT overrides)."""
    if root := os.environ.get("CLOUDSDK_ROOT"):
        return Path(root)
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable(
            "gcloud not found on PATH: install the Google Cloud CLI with the pubsub-emulator and "
            "cloud-firestore-emulator components (Debian: google-cloud-cli-pubsub-emulator, "
            "google-cloud-cli-firestore-emulator)")
    return Path(gcloud).resolve().parent.parent


def _command(kind: str, port: int) -> list[str]:
    platform = sdk_root() / "platform"
    if kind == "pubsub":
        exe = platform / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        args = [f"--host={LOOPBACK}", f"--port={port}"]
    else:
        exe = platform / "cloud-firestore-emulator" / "cloud_firestore_emulator"
        args = ["start", f"--host={LOOPBACK}", f"--port={port}"]
    if not exe.exists():
        raise EmulatorUnavailable(f"{kind} emulator not installed: {exe} is missing "
                                  f"(gcloud components install {kind}-emulator, or the Debian package)")
    if shutil.which("java") is None:
        raise EmulatorUnavailable("java not found on PATH: the emulators need Java 17")
    return [str(exe), *args]


def is_ready(host: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Emulator:
    """One running emulator; `host` is what *_EMULATOR_HOST should hold."""

    kind: str
    host: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    env_var: str = field(init=False)

    def __post_init__(self) -> None:
        self.env_var = "PUBSUB_EMULATOR_HOST" if self.kind == "pubsub" else "FIRESTORE_EMULATOR_HOST"

    @property
    def owned(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        """Stop the emulator and its JVM (the whole process group); a reused one is left alone."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start(kind: str, *, port: int | None = None, log_dir: Path | None = None,
          timeout: float = 60.0) -> Emulator:
    """Start an emulator ('pubsub' or 'firestore') in its own process group and wait until it answers."""
    port = port or free_port()
    command = _command(kind, port)
    log_path = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"{kind}-emulator-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    emulator = Emulator(kind, f"{LOOPBACK}:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while not is_ready(emulator.host):
        if process.poll() is not None or time.monotonic() > deadline:
            emulator.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise EmulatorUnavailable(f"{kind} emulator did not come up on {emulator.host}; log {log_path}:\n{tail}")
        time.sleep(0.2)
    return emulator


def start_or_reuse(kind: str, *, log_dir: Path | None = None) -> Emulator:
    """Reuse the emulator named by PUBSUB_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST, else start one."""
    env_var = "PUBSUB_EMULATOR_HOST" if kind == "pubsub" else "FIRESTORE_EMULATOR_HOST"
    if host := os.environ.get(env_var):
        if not is_ready(host, timeout=3):
            raise EmulatorUnavailable(f"{env_var}={host} is set but nothing answers there")
        return Emulator(kind, host)
    return start(kind, log_dir=log_dir)


@contextlib.contextmanager
def running(*, log_dir: Path | None = None) -> Iterator[tuple[Emulator, Emulator]]:
    """Both emulators for the duration of the block, with the *_EMULATOR_HOST variables set for this process."""
    pubsub = start_or_reuse("pubsub", log_dir=log_dir)
    try:
        firestore = start_or_reuse("firestore", log_dir=log_dir)
    except BaseException:
        pubsub.stop()
        raise
    saved = {e.env_var: os.environ.get(e.env_var) for e in (pubsub, firestore)}
    os.environ.update({e.env_var: e.host for e in (pubsub, firestore)})
    try:
        yield pubsub, firestore
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        firestore.stop()
        pubsub.stop()
