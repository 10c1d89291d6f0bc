"""`ingress.__main__.tune_gc`: fewer collections, never none — cyclic garbage made after it is still collected."""
from __future__ import annotations

from ingress.__main__ import tune_gc
from tests.collector import check_tuning


def test_start_up_objects_are_frozen_and_cycles_made_later_are_still_collected() -> None:
    check_tuning(tune_gc)
