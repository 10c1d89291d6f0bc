"""The acking read's pull, against a real Pub/Sub client whose endpoint is closed (no process, no network)."""
from __future__ import annotations

import socket
import warnings

import pytest

from pipeline.local.acking_read import PullFn


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_pull_does_not_use_the_deprecated_return_immediately_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{closed_port()}")
    monkeypatch.setattr("pipeline.local.acking_read.time.sleep", lambda _: None)
    pull = PullFn("projects/p/subscriptions/s", "us-central1")
    pull.setup()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert pull._pull() == []  # unreachable: nothing leased, the next tick retries
    finally:
        pull.teardown()
    # The client library itself says when a request carries the flag.
    assert not [w for w in caught if "return_immediately" in str(w.message)], [str(w.message) for w in caught]
