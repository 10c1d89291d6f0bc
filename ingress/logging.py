"""JSON log lines in Cloud Logging's shape; only allow-listed fields are written, so no secret or payload leaks."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("eventId", "latencyMs", "status", "error", "detail", "method", "path", "clientIp", "messages")
_ALWAYS = frozenset({"severity", "message", "time", "logger", "region", "serviceContext", "stack_trace"})


class CloudLoggingFormatter(JsonFormatter):
    """One JSON object per record: severity, message, time, logger, region, service and the allow-listed extras."""

    # formatTime: RFC 3339 UTC with milliseconds
    converter: Callable[[float | None], time.struct_time] = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, *, region: str, service: str) -> None:
        super().__init__(["levelname", "message", "asctime", "name"],
                         rename_fields={"levelname": "severity", "asctime": "time", "name": "logger",
                                        "exc_info": "stack_trace"},
                         static_fields={"region": region, "serviceContext": {"service": service}},
                         json_default=str, json_ensure_ascii=False)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_data.items() if k in _ALWAYS or (k in FIELDS and v is not None)}


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
