"""The load tools' one percentile formula, against values worked out by hand."""
from __future__ import annotations

import random

import pytest

from ops.load.stats import Reservoir, percentile


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, in any order
    # position q × (n - 1) in the sorted samples: 0.5 × 99 = 49.5 lies halfway between 50 and 51
    assert percentile(values, 0.50) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)  # 94.05 → 95 + 0.05 × (96 - 95)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([10.0, 20.0], 0.95) == pytest.approx(19.5)


def test_one_sample_is_every_percentile() -> None:
    assert percentile([7.0], 0.99) == 7.0


def test_a_reservoir_keeps_every_sample_until_full_then_a_bounded_uniform_sample() -> None:
    """Judged against the stream itself: exact percentiles below the size; above it, the size holds, every kept
    value came from the stream, and the sample is uniform (its mean and p95 near the stream's, which keeping the
    first or the last values would miss by half)."""
    short = Reservoir(size=1_000, rng=random.Random(1))
    values = [random.Random(2).expovariate(0.1) for _ in range(999)]
    for v in values:
        short.add(v)
    assert sorted(short) == sorted(values) and percentile(short, 0.95) == percentile(values, 0.95)

    stream = range(200_000)
    reservoir = Reservoir(size=2_000, rng=random.Random(3))
    for v in stream:
        reservoir.add(float(v))
    kept = list(reservoir)
    assert len(kept) == 2_000 and reservoir.seen == 200_000 and len(set(kept)) == 2_000
    assert all(0 <= v < 200_000 and v == int(v) for v in kept)
    assert abs(sum(kept) / len(kept) - 100_000) < 5_000  # the first 2,000 would give 1,000; the last, 199,000
    assert abs(percentile(kept, 0.95) - 190_000) < 4_000


def test_a_reservoir_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="positive"):
        Reservoir(size=0)
