"""Start, probe and stop the Google Cloud CLI's Pub/Sub and Firestore emulators on free loopback ports."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ops.local.process import NotReady, Process, http_ok

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
    return http_ok(f"http://{host}/", timeout)


@dataclass
class Emulator:
    """One running emulator; `host` is what *_EMULATOR_HOST should hold."""

    kind: str
    host: str
    process: Process | None = None
    log_path: Path | None = None
    env_var: str = field(init=False)

    def __post_init__(self) -> None:
        self.env_var = "PUBSUB_EMULATOR_HOST" if self.kind == "pubsub" else "FIRESTORE_EMULATOR_HOST"

    @property
    def owned(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        """Stop the emulator and its JVM (the whole process group); a reused one is left alone."""
        if self.process is not None:
            self.process.stop()


def start(kind: str, *, port: int | None = None, log_dir: Path | None = None,
          timeout: float = 60.0) -> Emulator:
    """Start an emulator ('pubsub' or 'firestore') in its own process group and wait until it answers."""
    port = port or free_port()
    command = _command(kind, port)
    log_path = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"{kind}-emulator-{port}.log"
    process = Process(f"{kind}-emulator", command, {}, str(log_path)).start()
    emulator = Emulator(kind, f"{LOOPBACK}:{port}", process, log_path)
    try:
        process.wait_ready(lambda: is_ready(emulator.host), f"{kind} emulator", timeout)
    except NotReady:
        emulator.stop()
        raise EmulatorUnavailable(f"{kind} emulator did not come up on {emulator.host}; log {log_path}:\n"
                                  f"{process.tail(2000)}") from None
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
