"""/openapi.json is a valid OpenAPI 3 document, and schemathesis finds the app true to it."""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from ingress import create_app
from ingress.openapi import WEBHOOK_PATHS
from tests.ingress.conftest import RecordingPublisher, make_settings

PUBLISHER = RecordingPublisher()
APP = create_app(make_settings(RATE_LIMIT_PER_MINUTE="0"), publisher=PUBLISHER)  # the limiter has its own tests
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


def test_document_is_valid_openapi_3_and_covers_the_routes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    SCHEMA.validate()  # against the OpenAPI 3.0 meta-schema; raises on an invalid document
    assert set(document["paths"]) == {*WEBHOOK_PATHS, "/healthz", "/readyz", "/admin/drain", "/admin/undrain"}
    for path in WEBHOOK_PATHS:
        assert set(document["paths"][path]["post"]["responses"]) == {"200", "202", "400", "401", "413", "415",
                                                                     "429", "503"}


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_app_conforms_to_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate()
    assert PUBLISHER.messages == []  # no generated request carries a valid signature
