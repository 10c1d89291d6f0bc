"""Settings of the embedded FnApiRunner that runs the acking graph locally (Dataflow runs none of this)."""
from __future__ import annotations

import gc
from typing import Any


def without_state_cache() -> None:
    """Turn off the embedded FnApiRunner worker's state cache.

    It weighs every state value it caches with objsize, which walks every loaded module's globals each time:
    with a state write per event that was half of the pipeline's CPU. State itself stays in the runner's
    in-memory store, so reads stay correct (and cheap, in-process).
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.STATE_CACHE_SIZE_MB = 0


def eager_monitoring_infos() -> None:
    """Consolidate the embedded FnApiRunner's per-stage metrics after every bundle instead of chaining them.

    `FnApiRunner.run_stages` (Beam 2.77) keeps each stage's monitoring infos as
    `consolidate(itertools.chain(this_bundle, previous))`, a lazy generator wrapping the previous one, and only
    reads them when the pipeline ends, which a streaming job never does. So every bundle (20 a second per stage
    here, from the 50 ms PeriodicImpulse) added a generator, a chain and the bundle's MonitoringInfo protobufs
    to a chain that was never let go: measured with `PeriodicImpulse -> Map` alone, about 220 MonitoringInfos
    and 1,300 generators a second, and 5.6 MiB/s of resident memory, most of it the protobufs' native memory that
    tracemalloc does not see. Consolidated eagerly the list stays at one info per metric.
    """
    from apache_beam.metrics.monitoring_infos import consolidate
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    def consolidated(metrics: Any, key: Any = None) -> list[Any]:
        return list(consolidate(metrics) if key is None else consolidate(metrics, key))

    fn_runner.consolidate_monitoring_infos = consolidated  # type: ignore[attr-defined]  # the name run_stages reads


GC_THRESHOLDS = (50_000, 50, 100)
"""The young generation collected every 50,000 net allocations instead of CPython's 700, the older ones as rarely."""


def collect_less_often(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze what start-up built out of the cyclic collector's sight and run it less often.

    Beam allocates thousands of short-lived objects a bundle, which reference counting frees; at CPython's default
    the collector ran every few hundred of them and its full scans walked the runner's whole heap. Draining 6,000
    orders on 2026-12-03 (two alternating pairs, same emulators): 1,194 and 1,093 -> 1,209 and 1,254 events/s.
    Cyclic garbage is still collected, in larger batches (tests/pipeline/local/test_runner.py).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
