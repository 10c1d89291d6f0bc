"""Every gRPC status code a Firestore call can fail with, classified and handled code by code (DESIGN §3)."""
from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.api_core import exceptions as gexc

from pipeline.firestore_transport import (
    CONFLICT,
    PERMANENT,
    STATUS_CLASS,
    TRANSIENT,
    FirestoreRpc,
    Unavailable,
    WriteFailed,
    classify,
)

# Written out by hand from the gRPC code list and what each means for a Firestore commit: the independent source.
EXPECTED = {
    "CANCELLED": TRANSIENT, "UNKNOWN": TRANSIENT, "DEADLINE_EXCEEDED": TRANSIENT, "RESOURCE_EXHAUSTED": TRANSIENT,
    "ABORTED": TRANSIENT, "INTERNAL": TRANSIENT, "UNAVAILABLE": TRANSIENT, "UNAUTHENTICATED": TRANSIENT,
    "ALREADY_EXISTS": CONFLICT, "FAILED_PRECONDITION": CONFLICT,
    "INVALID_ARGUMENT": PERMANENT, "NOT_FOUND": PERMANENT, "PERMISSION_DENIED": PERMANENT, "OUT_OF_RANGE": PERMANENT,
    "UNIMPLEMENTED": PERMANENT, "DATA_LOSS": PERMANENT,
}
ATTEMPTS = 3


class _Open:
    def throttle_request(self, now_ms: float) -> bool:
        return False

    def successful_request(self, now_ms: float) -> None:
        pass


def test_the_table_names_every_error_code() -> None:
    assert {c.name for c in STATUS_CLASS} == {c.name for c in grpc.StatusCode} - {"OK"} == set(EXPECTED)


def _failing(code: grpc.StatusCode, calls: list[int]) -> Callable[[], None]:
    def call() -> None:
        calls.append(1)
        raise gexc.exception_class_for_grpc_status(code)(f"{code.name} from the server")
    return call


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK], ids=lambda c: c.name)
def test_each_code_is_classified_and_handled(code: grpc.StatusCode) -> None:
    expected = EXPECTED[code.name]
    error = gexc.exception_class_for_grpc_status(code)("x")
    assert classify(error) == expected
    rpc = FirestoreRpc("us-central1", ATTEMPTS, sleep=lambda _: None, throttler=_Open())
    calls: list[int] = []
    if expected == TRANSIENT:  # retried, then Unavailable: released for redelivery, never a dead letter
        with pytest.raises(Unavailable, match=f"after {ATTEMPTS} attempts"):
            rpc.call(_failing(code, calls))
        assert len(calls) == ATTEMPTS
    elif expected == CONFLICT:  # passed through at once for the sink to re-read and decide again
        with pytest.raises(gexc.exception_class_for_grpc_status(code)):
            rpc.call(_failing(code, calls))
        assert calls == [1]
    else:  # retrying cannot fix it: WriteFailed at once
        with pytest.raises(WriteFailed):
            rpc.call(_failing(code, calls))
        assert calls == [1]


def test_a_transient_code_that_clears_is_a_success() -> None:
    rpc = FirestoreRpc("us-central1", ATTEMPTS, sleep=lambda _: None, throttler=_Open())
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise gexc.Cancelled("the server cancelled the call")
        return "committed"

    assert rpc.call(flaky) == "committed" and len(calls) == 2


@pytest.mark.parametrize(("error", "expected"), [
    (gexc.GatewayTimeout("proxy"), TRANSIENT), (gexc.BadGateway("proxy"), TRANSIENT),
    (gexc.TooManyRequests("slow down"), TRANSIENT), (gexc.BadRequest("no"), PERMANENT),
    (gexc.RetryError("gave up", None), TRANSIENT), (ConnectionResetError(), TRANSIENT), (TimeoutError(), TRANSIENT),
    (ValueError("a bug"), None), (KeyError("a bug"), None),
])
def test_errors_without_a_grpc_code(error: Exception, expected: str | None) -> None:
    """HTTP-only answers (a proxy's), the client's own give-ups, and a bug (None: it propagates to the sink)."""
    assert classify(error) == expected
