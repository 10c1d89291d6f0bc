"""Batching within a bundle, without state or timers (so it runs next to PeriodicImpulse on DirectRunner)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam


class BatchInBundle(beam.DoFn):
    """Group a bundle's elements into lists of at most `size` (no state, no timers: safe with PeriodicImpulse)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._size = size

    def start_bundle(self) -> None:
        self._batch: list[Any] = []

    def process(self, element: Any) -> Iterator[list[Any]]:
        self._batch.append(element)
        if len(self._batch) >= self._size:
            yield self._batch
            self._batch = []

    def finish_bundle(self) -> Iterator[Any]:
        if self._batch:
            yield beam.transforms.window.GlobalWindows.windowed_value(self._batch)
            self._batch = []
