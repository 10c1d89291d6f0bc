"""The one percentile formula the load tools report raw samples with (traffic, drills, benchmarks)."""
from __future__ import annotations

import statistics
from collections.abc import Iterable


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-quantile (0 < q < 1, to the hundredth) of raw samples, in any order: `statistics.quantiles`' inclusive
    method, which interpolates linearly between the two closest ranks (numpy's default)."""
    values = sorted(samples)
    if len(values) < 2:  # quantiles needs two points; one sample is every quantile of itself
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
