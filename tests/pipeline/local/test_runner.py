"""The embedded FnApiRunner's settings: metrics consolidated per bundle, so a streaming job's memory stays flat."""
from __future__ import annotations

import gc
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Timestamp

from pipeline.local import runner
from pipeline.main import ACKING_LOCAL_RUNNER
from tests.collector import check_tuning


def _monitoring_infos() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "MonitoringInfo")


@pytest.mark.integration
def test_a_streaming_runner_keeps_a_bounded_set_of_metrics_whatever_the_bundles() -> None:
    """Beam chained every bundle's MonitoringInfos into a generator never consumed while streaming: about 220 more
    a second here, and 5.6 MiB/s of memory. Counted at 2 s and at 5 s of a 50 ms impulse (about 60 bundles
    apart), the patched runner holds the same number."""
    runner.eager_monitoring_infos()
    counts: dict[float, int] = {}

    def count() -> None:
        started = time.monotonic()
        for at in (2.0, 5.0):
            time.sleep(max(0.0, started + at - time.monotonic()))
            counts[at] = _monitoring_infos()

    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    options.view_as(StandardOptions).runner = ACKING_LOCAL_RUNNER
    watcher = threading.Thread(target=count, daemon=True)
    with beam.Pipeline(options=options) as p:
        watcher.start()
        _ = (p | PeriodicImpulse(start_timestamp=Timestamp.now(), stop_timestamp=Timestamp.now() + 6,
                                 fire_interval=0.05)
             | beam.Map(lambda x: x))
    watcher.join()
    assert counts[2.0] > 0
    assert counts[5.0] - counts[2.0] < 100, counts  # unpatched: ~660 more


def test_collect_less_often_freezes_start_up_and_still_collects_later_cycles() -> None:
    """Fewer collections, never none: a cycle made after it is freed once the raised threshold is passed."""
    check_tuning(runner.collect_less_often)
