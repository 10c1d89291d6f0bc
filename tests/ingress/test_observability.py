"""JSON log lines in Cloud Logging's shape, never carrying a secret or the payload; the duplicate cache TTL."""
from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ingress import create_app
from ingress.dedupe import RecentEvents
from ingress.logging import configure_logging
from tests.ingress.conftest import (
    ADMIN_TOKEN,
    SECRET,
    WEBHOOK,
    RecordingPublisher,
    make_settings,
    order_body,
    signed_headers,
)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = {name: getattr(logging, name) for name in ("_srcfile", "logThreads", "logProcesses",
                                                            "logMultiprocessing")}
    stream = io.StringIO()
    configure_logging(region="europe-west1", service="paynow-ingress", level="INFO", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in switches.items():
        setattr(logging, name, value)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_webhook_logs_one_json_line(log_stream: io.StringIO) -> None:
    publisher = RecordingPublisher()
    with TestClient(create_app(make_settings(), publisher=publisher)) as client:
        body = order_body("evt-log", uid="user-secretive")
        client.post(WEBHOOK, content=body, headers=signed_headers(body))
        client.post(WEBHOOK, content=body, headers={**signed_headers(body), "paynow-signature": "AAAA"})
    records = [r for r in lines(log_stream) if r["logger"] == "ingress.webhook"]
    accepted, refused = records
    assert accepted["severity"] == "INFO" and accepted["message"] == "webhook accepted"
    assert accepted["region"] == "europe-west1" and accepted["eventId"] == "evt-log"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(accepted["time"]))
    assert isinstance(accepted["latencyMs"], float) and accepted["status"] == 202
    assert refused["severity"] == "WARNING" and refused["error"] == "invalid_signature" and refused["status"] == 401
    output = log_stream.getvalue()
    for leaked in (SECRET.decode(), ADMIN_TOKEN, "buyer@example.com", "user-secretive", "459935272365195264"):
        assert leaked not in output


def test_publish_failure_logs_an_error_line(log_stream: io.StringIO) -> None:
    with TestClient(create_app(make_settings(), publisher=RecordingPublisher(fail=True))) as client:
        body = order_body("evt-fail")
        client.post(WEBHOOK, content=body, headers=signed_headers(body))
    [record] = [r for r in lines(log_stream) if r["logger"] == "ingress.webhook"]
    assert record["severity"] == "ERROR" and record["error"] == "publish_unavailable"
    assert record["eventId"] == "evt-fail" and record["status"] == 503


def test_arbitrary_extras_are_not_logged(log_stream: io.StringIO) -> None:
    logging.getLogger("ingress").warning("careful", extra={"payload": "raw-body", "eventId": "e1"})
    [record] = lines(log_stream)
    assert record["eventId"] == "e1" and "payload" not in record and "raw-body" not in log_stream.getvalue()


def test_exceptions_odd_strings_and_times_are_written_as_json(log_stream: io.StringIO) -> None:
    log = logging.getLogger("ingress")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", extra={"detail": "half an emoji \ud83d", "status": 500})
    log.error("at a known time", extra={"messages": 3})
    first, second = lines(log_stream)
    assert first["severity"] == "ERROR" and "RuntimeError: boom" in str(first["stack_trace"])
    assert first["detail"] == "half an emoji \ud83d" and first["status"] == 500  # escaped, never a lost line
    assert second["messages"] == 3 and "stack_trace" not in second and "detail" not in second
    record = logging.LogRecord("ingress", logging.INFO, "", 0, "m", None, None)
    record.created = 1_780_000_000.0456
    formatted = json.loads(log_stream_formatter().format(record))
    assert formatted["time"] == "2026-05-28T20:26:40.045Z" and formatted["serviceContext"] == {"service": "s"}


def log_stream_formatter() -> logging.Formatter:
    from ingress.logging import CloudLoggingFormatter

    return CloudLoggingFormatter(region="r", service="s")


def test_recent_events_expire_after_their_ttl() -> None:
    now = [0.0]
    recent = RecentEvents(ttl=10, clock=lambda: now[0])
    recent.remember("e1", b"body")
    assert recent.seen("e1", b"body") and not recent.seen("e1", b"other") and not recent.seen("e2", b"body")
    now[0] = 10.5
    assert not recent.seen("e1", b"body")


def test_recent_events_are_bounded() -> None:
    recent = RecentEvents(ttl=60, max_entries=3)
    for i in range(5):
        recent.remember(f"e{i}", b"b")
    assert len(recent) == 3 and not recent.seen("e0", b"b") and recent.seen("e4", b"b")
