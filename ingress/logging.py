"""JSON log lines in Cloud Logging's shape; only allow-listed fields are written, so no secret or payload leaks."""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO

FIELDS = ("eventId", "latencyMs", "status", "error", "detail", "method", "path", "clientIp", "messages")


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record: severity, message, time, region, service and the allow-listed extras."""

    def __init__(self, *, region: str, service: str) -> None:
        super().__init__()
        self.region = region
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
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
    """Route every logger (ours, uvicorn's, grpc's) through one JSON handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter(region=region, service=service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
