"""The one check of a garbage-collector tuning (ingress `tune_gc`, pipeline `collect_less_often`): fewer collections,
never none — cyclic garbage made after the tuning is still collected once the raised threshold is passed."""
from __future__ import annotations

import gc
import weakref
from collections.abc import Callable


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _orphan_cycle() -> weakref.ref[_Cycle]:
    """An object that references itself and nothing else does: only the cyclic collector frees it."""
    return weakref.ref(_Cycle())


def check_tuning(tune: Callable[[tuple[int, int, int]], None]) -> None:
    """Tune with a threshold of 1,000 and judge it; the interpreter's collector is restored afterwards."""
    thresholds = gc.get_threshold()
    try:
        tune((1_000, 50, 100))
        assert gc.isenabled() and gc.get_threshold() == (1_000, 50, 100)
        assert gc.get_freeze_count() > 1_000  # the imported modules and their objects, out of every scan
        alive = _orphan_cycle()
        kept: list[list[int]] = [[] for _ in range(500)]  # fewer allocations than the threshold: no collection yet
        assert alive() is not None
        kept += [[] for _ in range(1_000)]  # past it: the young generation is collected, the cycle with it
        assert alive() is None, "the tuning must raise the threshold, not stop collecting"
        assert len(kept) == 1_500
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
