"""The drills' tests run a whole two-region stack (ops/local/stack.py) on the session's emulators."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ops.local.stack import Config, Stack


def running_stack(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A started stack in a project of its own (`prefix-xxxxxxxx`) and a PAYNOW_HOME of its own; stopped after."""
    home = tmp_path_factory.mktemp("paynow-home")
    os.environ["PAYNOW_HOME"] = str(home)
    running = Stack(Config(project=f"{prefix}-{uuid.uuid4().hex[:8]}", home=home))
    try:
        running.start()
        yield running
    finally:
        running.stop()
        os.environ.pop("PAYNOW_HOME", None)
