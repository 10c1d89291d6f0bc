"""The one percentile formula the load tools report raw samples with (traffic, drills, benchmarks)."""
from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Iterator


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-quantile (0 < q < 1, to the hundredth) of raw samples, in any order: `statistics.quantiles`' inclusive
    method, which interpolates linearly between the two closest ranks (numpy's default)."""
    values = sorted(samples)
    if len(values) < 2:  # quantiles needs two points; one sample is every quantile of itself
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class Reservoir:
    """At most `size` samples of a stream of any length, each value kept with the same probability (Vitter's
    algorithm R): every sample while the stream is shorter than `size`, a uniform sample of it after. So a run's
    percentiles stay those of the whole run, and its memory and the cost of a percentile stay bounded however long
    it runs (`make run` sends for days; a list of every latency grew 32 B a webhook and was sorted every second).
    """

    def __init__(self, size: int = 131_072, rng: random.Random | None = None) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self.seen = 0
        self._samples: list[float] = []
        self._rng = rng or random.Random()

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self._samples) < self.size:
            self._samples.append(value)
        elif (slot := self._rng.randrange(self.seen)) < self.size:
            self._samples[slot] = value

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[float]:
        return iter(self._samples)
