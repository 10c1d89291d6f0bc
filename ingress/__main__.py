"""`python -m ingress`: uvicorn (uvloop + httptools) on $HOST:$PORT (127.0.0.1:8080); SIGTERM drains first."""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from ingress.app import create_app
from ingress.logging import configure_logging
from ingress.settings import ConfigError, Settings
from ingress.state import IngressState

log = logging.getLogger("ingress")


class DrainingServer(uvicorn.Server):
    """First SIGTERM/SIGINT: report not-ready and refuse new webhooks for `drain_seconds` so the load balancer
    moves traffic away, then uvicorn's graceful shutdown (in-flight requests finish, then the lifespan flushes
    the publisher). A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, *, state: IngressState, drain_seconds: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_seconds = drain_seconds
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_until is not None or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self.drain_until = time.monotonic() + self.drain_seconds
        self.state.set_draining(True, f"signal {signal.Signals(sig).name}")

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn as the ingress runs it. Its own proxy-header handling is off: it would replace the TCP peer with an
    X-Forwarded-For entry whenever the peer is in FORWARDED_ALLOW_IPS; the client is FORWARDED_HOPS' business."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop", http="httptools", lifespan="on",
                          log_config=None, access_log=False, proxy_headers=False,
                          timeout_graceful_shutdown=int(settings.publish_timeout) + 5)


GC_THRESHOLDS = (50_000, 50, 100)
"""Collect the young generation every 50,000 net allocations instead of CPython's 700 (and the older ones as rarely)."""


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze what start-up built (modules, app, settings: never garbage) out of the collector's sight, and collect
    less often. A webhook allocates thousands of short-lived objects that reference counting frees; at CPython's
    default every few webhooks ran a collection, and the older generations' full scans (the duplicate cache's
    100,000 entries among them) paused every request in flight. Measured with wrk -c32 on real deliveries, three
    interleaved pairs on 2026-12-03: p99 75-86 -> 33-38 ms, CPU per webhook 0.61-0.71 -> 0.45-0.51 ms. Cyclic
    garbage is still collected, only in larger batches (tests/ingress/test_gc.py, tests/collector.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(json.dumps({"severity": "CRITICAL", "message": f"invalid configuration: {exc}",
                          "setting": exc.setting}), file=sys.stderr)
        return 2
    configure_logging(region=settings.region, service=settings.service_name, level=settings.log_level)
    app = create_app(settings)
    config = server_config(app, settings)
    tune_gc()
    server = DrainingServer(config, state=app.state.ingress, drain_seconds=settings.drain_seconds)
    log.info("ingress starting", extra={"detail": f"{settings.host}:{settings.port} topic {settings.topic}"})
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
