"""`ingress.__main__.tune_gc`: fewer collections, never none — cyclic garbage made after it is still collected."""
from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ingress.__main__ import tune_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _cycle() -> weakref.ref[Node]:
    """A two-object cycle nobody references: only the cyclic collector can free it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_start_up_objects_are_frozen_and_cycles_made_later_are_still_collected(restore_gc: None) -> None:
    tune_gc((1_000, 50, 100))
    assert gc.isenabled() and gc.get_threshold() == (1_000, 50, 100)
    assert gc.get_freeze_count() > 1_000  # the imported modules and their objects, out of every scan
    cycle = _cycle()
    kept: list[list[int]] = [[] for _ in range(500)]  # fewer allocations than the threshold: no collection yet
    assert cycle() is not None
    kept += [[] for _ in range(1_000)]  # past it: the young generation is collected, the cycle with it
    assert cycle() is None, "tune_gc must raise the threshold, not stop collecting"
    assert len(kept) == 1_500
