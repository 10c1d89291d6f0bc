"""The load tools' one percentile formula, against values worked out by hand."""
from __future__ import annotations

import pytest

from ops.load.stats import percentile


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, in any order
    # position q × (n - 1) in the sorted samples: 0.5 × 99 = 49.5 lies halfway between 50 and 51
    assert percentile(values, 0.50) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)  # 94.05 → 95 + 0.05 × (96 - 95)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([10.0, 20.0], 0.95) == pytest.approx(19.5)


def test_one_sample_is_every_percentile() -> None:
    assert percentile([7.0], 0.99) == 7.0
