"""JSON log lines in Cloud Logging's shape; only allow-listed fields are written, so no secret or payload leaks."""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

FIELDS = ("eventId", "latencyMs", "status", "error", "detail", "method", "path", "clientIp", "messages")


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record: severity, message, time, region, service and the allow-listed extras."""

    def __init__(self, *, region: str, service: str) -> None:
        super().__init__()
        self.region = region
        self.service = service
        self._second = -1
        self._prefix = ""

    def _time(self, created: float) -> str:
        """RFC 3339 UTC with milliseconds; the date part is formatted once per second, not per line."""
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": self._time(record.created),
            "region": self.region,
            "logger": record.name,
            "serviceContext": {"service": self.service},
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(*, region: str, service: str, level: str, stream: IO[str] | None = None) -> None:
    """Route every logger (ours, uvicorn's, grpc's) through one JSON handler on stdout.

    Records skip the caller, thread and process lookups (the logging docs' "Optimization" switches): one line
    per webhook is on the hot path, and none of those fields is written.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter(region=region, service=service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
