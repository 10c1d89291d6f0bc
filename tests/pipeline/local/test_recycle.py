"""RSS recycling of the local worker: its bound setting and its reading of this process's resident memory."""
from __future__ import annotations

import resource

import pytest

from pipeline.local import recycle


@pytest.mark.parametrize(("value", "limit"), [("", 2048), ("0", 0), ("512", 512)])
def test_memory_bound_setting(value: str, limit: int) -> None:
    assert recycle.limit_mb({"PIPELINE_MAX_RSS_MB": value}) == limit


@pytest.mark.parametrize("value", ["100", "2g", "-1"])
def test_bad_memory_bound_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="PIPELINE_MAX_RSS_MB"):
        recycle.limit_mb({"PIPELINE_MAX_RSS_MB": value})


def test_resident_memory_is_read_in_mib() -> None:
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the kernel's own peak, in KiB on Linux
    assert 10 < recycle.rss_mb() <= peak_mib + 1
