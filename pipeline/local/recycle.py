"""Bound a local worker's memory: past a resident-size limit it hands its leases back and re-executes itself.

A safety net. Beam 2.77's FnApiRunner grew without end while a streaming pipeline ran (about 16 MiB/s for this
job's graph, idle or busy): it chained every bundle's metrics into a generator it never consumed, which
`pipeline.local.runner.eager_monitoring_infos` now prevents (memory flat since). Should anything else in the local
runner grow, this still holds the bound. Dataflow does not run this code. The acking read makes a restart safe:
unacknowledged messages are handed back (ack deadline 0) and pulled again, and the idempotent commit absorbs any
that had already landed.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

import psutil

from pipeline.local.leases import leases_for
from pipeline.observability import log

ENV_LIMIT = "PIPELINE_MAX_RSS_MB"
DEFAULT_LIMIT_MB = 2048
CHECK_SECONDS = 5.0


def rss_mb() -> float:
    """This process's resident memory in MiB."""
    return float(psutil.Process().memory_info().rss) / 2**20


def limit_mb(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The configured bound (0 turns recycling off); a bad value is refused with the variable's name."""
    raw = environ.get(ENV_LIMIT, "").strip() or str(DEFAULT_LIMIT_MB)
    if not raw.isdigit() or (0 < int(raw) < 256):
        raise ValueError(f"{ENV_LIMIT}={raw!r}: must be 0 (off) or a whole number of MiB >= 256")
    return int(raw)


def recycle(subscription: str, rss: float, limit: int) -> None:
    """Hand every in-flight message back to Pub/Sub and replace this process with a fresh copy of itself."""
    returned = leases_for(subscription).return_all()
    log(logging.WARNING, "recycling worker", rssMb=round(rss), limitMb=limit, messagesReturned=returned)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def start(subscription: str, limit: int, interval: float = CHECK_SECONDS) -> threading.Thread | None:
    """Watch this process's memory in a daemon thread; None when recycling is off."""
    if limit <= 0:
        return None

    def watch() -> None:
        while True:
            time.sleep(interval)
            if (rss := rss_mb()) > limit:
                recycle(subscription, rss, limit)

    thread = threading.Thread(target=watch, name="memory-recycler", daemon=True)
    thread.start()
    return thread
