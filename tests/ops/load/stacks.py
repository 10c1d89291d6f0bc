"""The drills' tests run a whole two-region stack (ops/local/stack.py) on the session's emulators."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ops.local.stack import Config, Stack


def running_stack(prefix: str, tmp_path_factory: pytest.TempPathFactory, *,
                  own_pubsub: bool = False) -> Iterator[Stack]:
    """A started stack in a project of its own (`prefix-xxxxxxxx`) and a PAYNOW_HOME of its own; stopped after.

    `own_pubsub`: the stack starts (and owns) a Pub/Sub emulator instead of the session's, for a test that freezes
    it while the session's keeps serving the other tests. The environment is restored afterwards."""
    home = tmp_path_factory.mktemp("paynow-home")
    saved = {var: os.environ.get(var) for var in ("PAYNOW_HOME", "PUBSUB_EMULATOR_HOST")}
    os.environ["PAYNOW_HOME"] = str(home)
    if own_pubsub:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    running = Stack(Config(project=f"{prefix}-{uuid.uuid4().hex[:8]}", home=home))
    try:
        running.start()
        yield running
    finally:
        running.stop()
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
