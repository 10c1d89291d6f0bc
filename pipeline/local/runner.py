"""Settings of the embedded FnApiRunner that runs the acking graph locally (Dataflow runs none of this)."""
from __future__ import annotations


def without_state_cache() -> None:
    """Turn off the embedded FnApiRunner worker's state cache.

    It weighs every state value it caches with objsize, which walks every loaded module's globals each time:
    with a state write per event that was half of the pipeline's CPU. State itself stays in the runner's
    in-memory store, so reads stay correct (and cheap, in-process).
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.STATE_CACHE_SIZE_MB = 0
