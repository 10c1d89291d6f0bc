"""Health, readiness (drain, publisher health, rollback switch), admin drain with its token, and /metrics."""
from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from ingress import create_app
from tests.ingress.conftest import ADMIN_TOKEN, WEBHOOK, RecordingPublisher, make_settings, order_body, signed_headers

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_healthz_names_the_region(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "region": "europe-west1", "service": "paynow-ingress"}


def test_readyz_is_200_when_ready(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "region": "europe-west1"}


def test_admin_drain_and_undrain(client: TestClient) -> None:
    drained = client.post("/admin/drain", headers=AUTH)
    assert drained.status_code == 200
    assert drained.json() == {"status": "draining", "region": "europe-west1"}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.headers["retry-after"] == "5"
    assert not_ready.json() == {"error": "not_ready", "detail": "draining"}
    assert "paynow_draining{region=\"europe-west1\"} 1.0" in client.get("/metrics").text
    undrained = client.post("/admin/undrain", headers=AUTH)
    assert undrained.json() == {"status": "serving", "region": "europe-west1"}
    assert client.get("/readyz").status_code == 200
    assert "paynow_draining{region=\"europe-west1\"} 0.0" in client.get("/metrics").text


@pytest.mark.parametrize("path", ["/admin/drain", "/admin/undrain"])
@pytest.mark.parametrize(("headers", "status", "error"), [
    ({}, 401, "unauthorized"),
    ({"authorization": ADMIN_TOKEN}, 401, "unauthorized"),
    ({"authorization": "Basic YWRtaW46YWRtaW4="}, 401, "unauthorized"),
    ({"authorization": "Bearer wrong-token"}, 403, "forbidden"),
])
def test_admin_needs_the_bearer_token(client: TestClient, path: str, headers: dict[str, str], status: int,
                                      error: str) -> None:
    response = client.post(path, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert client.get("/readyz").status_code == 200


def test_admin_is_refused_when_no_token_is_configured(publisher: RecordingPublisher) -> None:
    with TestClient(create_app(make_settings(ADMIN_TOKEN=""), publisher=publisher)) as client:
        response = client.post("/admin/drain", headers={"authorization": "Bearer "})
        assert response.status_code == 401
        response = client.post("/admin/drain", headers={"authorization": "Bearer anything"})
        assert response.status_code == 403
        assert client.get("/readyz").status_code == 200


def test_readyz_is_503_while_the_publisher_is_unhealthy(client: TestClient, publisher: RecordingPublisher) -> None:
    publisher.healthy = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"error": "not_ready", "detail": "publisher unhealthy"}


def test_without_failover_an_unhealthy_publisher_keeps_the_region_in_rotation(
        publisher: RecordingPublisher) -> None:
    with TestClient(create_app(make_settings(FAILOVER_ENABLED="false"), publisher=publisher)) as client:
        publisher.healthy = False
        assert client.get("/readyz").status_code == 200
        client.post("/admin/drain", headers=AUTH)
        assert client.get("/readyz").json() == {"error": "not_ready", "detail": "draining"}


def test_rollback_switch_makes_the_secondary_region_not_ready(publisher: RecordingPublisher) -> None:
    settings = make_settings(MULTI_REGION_ENABLED="false")  # REGION=europe-west1 is the secondary
    with TestClient(create_app(settings, publisher=publisher)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"] == ("MULTI_REGION_ENABLED=false and europe-west1 is not the primary "
                                             "region")
        assert client.get("/healthz").status_code == 200


def test_rollback_switch_leaves_the_primary_ready(publisher: RecordingPublisher) -> None:
    settings = make_settings(MULTI_REGION_ENABLED="false", REGION="us-central1")
    with TestClient(create_app(settings, publisher=publisher)) as client:
        assert client.get("/readyz").status_code == 200


def test_lifespan_starts_and_closes_the_publisher(publisher: RecordingPublisher) -> None:
    with TestClient(create_app(make_settings(), publisher=publisher)):
        assert publisher.started and not publisher.closed
    assert publisher.closed


def test_metrics_use_the_contract_names_and_labels(client: TestClient, publisher: RecordingPublisher) -> None:
    body = order_body("evt-m")
    client.post(WEBHOOK, content=body, headers=signed_headers(body))
    client.post(WEBHOOK, content=body, headers=signed_headers(body))
    client.post(WEBHOOK, content=body, headers={"content-type": "application/json"})
    publisher.fail = True
    other = order_body("evt-n")
    client.post(WEBHOOK, content=other, headers=signed_headers(other))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    region = 'region="europe-west1"'
    for line in (
        f'paynow_webhook_responses_total{{{region},reason="accepted",status="202"}} 1.0',
        f'paynow_webhook_responses_total{{{region},reason="duplicate",status="200"}} 1.0',
        f'paynow_webhook_responses_total{{{region},reason="missing_signature",status="401"}} 1.0',
        f'paynow_webhook_responses_total{{{region},reason="publish_unavailable",status="503"}} 1.0',
        f'paynow_webhook_ack_seconds_count{{outcome="accepted",{region}}} 1.0',
        f'paynow_webhook_ack_seconds_count{{outcome="refused",{region}}} 1.0',
        f'paynow_paused_ordering_keys{{{region}}} 0.0',
        f'paynow_draining{{{region}}} 0.0',
        f'paynow_publish_failures_total{{{region}}} 0.0',
    ):
        assert _has_sample(text, line), line


def _has_sample(text: str, expected: str) -> bool:
    """Prometheus orders labels alphabetically; compare label sets, not strings."""
    name, _, rest = expected.partition("{")
    labels, _, value = rest.rpartition("} ")
    want = (name, frozenset(labels.split(",")), value)
    for line in text.splitlines():
        if line.startswith(name + "{"):
            n, _, r = line.partition("{")
            ls, _, v = r.rpartition("} ")
            if (n, frozenset(ls.split(",")), v) == want:
                return True
    return False


def test_two_apps_have_separate_registries(publisher: RecordingPublisher) -> None:
    first = TestClient(create_app(make_settings(), publisher=publisher))
    second = TestClient(create_app(make_settings(), publisher=publisher))
    with first, second:
        body = order_body("evt-r")
        first.post(WEBHOOK, content=body, headers=signed_headers(body))
        assert 'reason="accepted"' in first.get("/metrics").text
        assert 'reason="accepted"' not in second.get("/metrics").text
