"""The pipeline's log lines: one JSON object each, in the shape the stack, the drills and Dataflow read."""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.observability import LOG, configure_logging, log


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root, beam = logging.getLogger(), logging.getLogger("apache_beam")
    handlers, level, beam_level = root.handlers[:], root.level, beam.level
    stream = io.StringIO()
    configure_logging(logging.INFO, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    beam.setLevel(beam_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_pipeline_line_carries_severity_message_its_fields_and_logger(log_stream: io.StringIO) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    log(logging.WARNING, "DLQ publish failed", attempt=2, failed=1, error="Unavailable('x')", at=when)
    log(logging.DEBUG, "dead-lettered", eventId="evt_1")  # below the level: not written
    assert lines(log_stream) == [{"severity": "WARNING", "message": "DLQ publish failed", "attempt": 2, "failed": 1,
                                  "error": "Unavailable('x')", "at": "2026-01-02 03:04:05+00:00",
                                  "logger": "pipeline"}]
    # the drills and tests look for this text in the process output
    assert '"message": "DLQ publish failed"' in log_stream.getvalue()


def test_another_loggers_line_and_its_exception(log_stream: io.StringIO) -> None:
    other = logging.getLogger("tests.a_library")
    other.info("plain %s", "text")
    try:
        raise ValueError("boom")
    except ValueError:
        other.exception("call failed")
    logging.getLogger("apache_beam.runners").info("Beam's INFO is held back")
    first, second = lines(log_stream)
    assert first == {"message": "plain text", "severity": "INFO", "logger": "tests.a_library"}
    assert set(second) == {"message", "severity", "logger", "exception"}
    assert second["severity"] == "ERROR" and second["message"] == "call failed"
    assert second["exception"].startswith("Traceback") and second["exception"].endswith("ValueError: boom")


def test_without_the_json_formatter_the_message_is_the_line() -> None:
    """Dataflow's worker handler writes only the record's message text: it must still hold every field."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(handler)
    try:
        log(logging.ERROR, "dead letter left for redelivery", eventId="evt_1", verdict="write_failed")
    finally:
        LOG.removeHandler(handler)
    assert json.loads(stream.getvalue()) == {"severity": "ERROR", "message": "dead letter left for redelivery",
                                             "eventId": "evt_1", "verdict": "write_failed"}
