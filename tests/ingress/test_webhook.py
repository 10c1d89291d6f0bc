"""Every webhook status with its body, on both paths; nothing is published for a refused request."""
from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from ingress import create_app
from schemas import EVENT_TYPES, customer_ordering_key, decode_envelope, deliveries, personal
from tests.ingress.conftest import (
    LEGACY,
    WEBHOOK,
    RecordingPublisher,
    make_settings,
    now_ms,
    order_body,
    signed_headers,
)

PATHS = pytest.mark.parametrize("path", [WEBHOOK, LEGACY])


@PATHS
def test_signed_webhook_is_published_and_answered_202(client: TestClient, publisher: RecordingPublisher,
                                                      path: str) -> None:
    body = order_body("evt-42", uid="user-7")
    response = client.post(path, content=body, headers=signed_headers(body))
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "eventId": "evt-42", "region": "europe-west1"}
    [(data, attributes, key)] = publisher.messages
    assert key == customer_ordering_key("3001")
    assert attributes == {"version": "4", "eventId": "evt-42", "eventType": "ON_ORDER_COMPLETED",
                          "region": "europe-west1"}
    envelope = decode_envelope(data)
    assert envelope["eventId"] == "evt-42" and envelope["region"] == "europe-west1"
    assert json.loads(envelope["data"]["rawPayload"]) == personal.strip(json.loads(body))


def test_ordering_key_is_the_paynow_customers_with_or_without_a_uid(client: TestClient,
                                                                    publisher: RecordingPublisher) -> None:
    for event_id, uid in (("1", None), ("2", "user-9")):
        body = order_body(event_id, uid=uid, customer="cust-99")
        assert client.post(WEBHOOK, content=body, headers=signed_headers(body)).status_code == 202
    assert [key for _, _, key in publisher.messages] == [customer_ordering_key("cust-99")] * 2


def test_the_number_of_ordering_keys_is_a_setting(publisher: RecordingPublisher) -> None:
    with TestClient(create_app(make_settings(PUBSUB_ORDERING_KEYS="3"), publisher=publisher)) as client:
        for i in range(60):
            body = order_body(str(i), customer=f"cust-{i}")
            assert client.post(WEBHOOK, content=body, headers=signed_headers(body)).status_code == 202
    assert {key for _, _, key in publisher.messages} == {"k0/3", "k1/3", "k2/3"}


def test_without_pubsub_ordering_the_key_travels_as_an_attribute(publisher: RecordingPublisher) -> None:
    body = order_body("evt-43", uid="user-8")
    with TestClient(create_app(make_settings(PUBSUB_ORDERING="false"), publisher=publisher)) as client:
        assert client.post(WEBHOOK, content=body, headers=signed_headers(body)).status_code == 202
    [(data, attributes, key)] = publisher.messages
    assert key == ""
    assert attributes["orderingKey"] == customer_ordering_key("3001")
    assert decode_envelope(data)["eventId"] == "evt-43"


@PATHS
def test_recent_duplicate_is_answered_200_without_a_second_publish(client: TestClient,
                                                                   publisher: RecordingPublisher, path: str) -> None:
    body = order_body("evt-dup")
    assert client.post(WEBHOOK, content=body, headers=signed_headers(body)).status_code == 202
    again = client.post(path, content=body, headers=signed_headers(body))  # PayNow's re-send: new timestamp
    assert again.status_code == 200
    assert again.json() == {"status": "accepted", "eventId": "evt-dup", "region": "europe-west1"}
    assert len(publisher.messages) == 1


def test_same_event_id_with_another_body_is_published_again(client: TestClient,
                                                            publisher: RecordingPublisher) -> None:
    first, changed = order_body("evt-x", lines=1), order_body("evt-x", lines=2)
    assert client.post(WEBHOOK, content=first, headers=signed_headers(first)).status_code == 202
    assert client.post(WEBHOOK, content=changed, headers=signed_headers(changed)).status_code == 202
    assert len(publisher.messages) == 2


@PATHS
@pytest.mark.parametrize(("body", "detail"), [
    (b"{not json", "body: not valid JSON"),
    (b"[1, 2]", "body: must be a JSON object"),
    (json.dumps({"event_id": "e1", "body": {}}).encode(), "event_type: missing"),
    (json.dumps({"event_type": "ON_ORDER_COMPLETED", "event_id": 7, "body": {}}).encode(),
     "event_id: must be a string, got integer"),
    (order_body().replace(b'"subscription_id":null}]', b'"subscription_id":null}], "lines":{}'),
     "body.lines: must be an array, got object"),
    (order_body().replace(b'"customer":{"id":"3001"', b'"customer":{"id":3001'),
     "body.customer.id: must be a string, got integer"),
])
def test_unmappable_payload_is_400_naming_the_field(client: TestClient, publisher: RecordingPublisher, path: str,
                                                   body: bytes, detail: str) -> None:
    response = client.post(path, content=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"
    assert response.json()["detail"].startswith(detail)
    assert set(response.json()) == {"error", "detail"}
    assert publisher.messages == []


def test_an_id_that_could_not_be_a_key_or_path_is_400(client: TestClient, publisher: RecordingPublisher) -> None:
    body = order_body(customer="c" * 129)
    response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert response.json()["detail"] == "body.customer.id: longer than 256 characters" or \
        response.json()["detail"].startswith("body.customer.id: must match")
    assert publisher.messages == []


@PATHS
def test_stale_timestamp_is_400(client: TestClient, publisher: RecordingPublisher, path: str) -> None:
    body = order_body()
    response = client.post(path, content=body, headers=signed_headers(body, timestamp_ms=now_ms() - 301_000))
    assert response.status_code == 400
    assert response.json() == {"error": "stale_timestamp", "detail": "paynow-timestamp is more than 300 s in the past"}
    assert publisher.messages == []


@PATHS
@pytest.mark.parametrize(("change", "error", "detail"), [
    ({"paynow-signature": None}, "missing_signature", "header paynow-signature is missing"),
    ({"paynow-timestamp": None}, "missing_signature", "header paynow-timestamp is missing"),
    ({"paynow-signature": "c2lnbmF0dXJl"}, "invalid_signature", "paynow-signature does not match any active secret"),
])
def test_bad_signature_is_401(client: TestClient, publisher: RecordingPublisher, path: str,
                              change: dict[str, str | None], error: str, detail: str) -> None:
    body = order_body()
    headers = {k: v for k, v in {**signed_headers(body), **change}.items() if v is not None}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": error, "detail": detail}
    assert publisher.messages == []


@PATHS
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client: TestClient, publisher: RecordingPublisher, path: str,
                                   content_type: str) -> None:
    body = order_body()
    response = client.post(path, content=body, headers=signed_headers(body, content_type=content_type))
    assert response.status_code == 415
    assert response.json() == {"error": "unsupported_media_type", "detail": "Content-Type must be application/json"}
    assert publisher.messages == []


def test_content_type_with_charset_is_accepted(client: TestClient) -> None:
    body = order_body()
    headers = signed_headers(body, content_type="application/json; charset=utf-8")
    assert client.post(WEBHOOK, content=body, headers=headers).status_code == 202


@PATHS
def test_publisher_failure_is_503_with_retry_after_and_nothing_published(path: str) -> None:
    publisher = RecordingPublisher(fail=True)
    with TestClient(create_app(make_settings(), publisher=publisher)) as client:
        body = order_body("evt-down")
        response = client.post(path, content=body, headers=signed_headers(body))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json() == {"error": "publish_unavailable",
                                   "detail": "Pub/Sub did not confirm the message; retry later"}
        assert publisher.messages == []
        publisher.fail = False  # Pub/Sub is back: the re-send is published, not answered as a duplicate
        retry = client.post(path, content=body, headers=signed_headers(body))
    assert retry.status_code == 202
    assert len(publisher.messages) == 1


def test_draining_instance_answers_503(client: TestClient, publisher: RecordingPublisher) -> None:
    client.app.state.ingress.set_draining(True, "test")  # type: ignore[attr-defined]
    body = order_body()
    response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "draining"
    assert publisher.messages == []


def test_wrong_method_and_unknown_path_answer_json(client: TestClient) -> None:
    wrong = client.get(WEBHOOK)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json() == {"error": "method_not_allowed", "detail": "Method Not Allowed"}
    assert client.get("/nope").json() == {"error": "not_found", "detail": "Not Found"}


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES | {"ON_SOMETHING_PAYNOW_ADDS_LATER"}))
def test_every_paynow_event_type_is_published_and_answered_202(client: TestClient, publisher: RecordingPublisher,
                                                               event_type: str) -> None:
    delivery = deliveries.delivery(event_type, "411486491630370816")
    if event_type in deliveries.defined_types():
        deliveries.validate(delivery)
    body = deliveries.encode(delivery)
    response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
    assert response.status_code == 202, response.text
    [(data, attributes, _)] = publisher.messages
    assert decode_envelope(data)["eventType"] == event_type == attributes["eventType"]


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"event_type":"ON_REFUND","event_id":"1","body":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
     "body: nested too deeply"),
    (order_body().replace(b'"total_amount":1000,"created_at"', b'"total_amount":1e9999999999,"created_at"'),
     "body.total_amount: must be an integer, got number"),
    (order_body().replace(b'"total_amount":1000,"sub', b'"total_amount":1' + b"0" * 5000 + b',"sub'),
     "body: not valid JSON (Exceeds the limit (4300 digits) for integer string conversion"),
    (order_body().replace(b'"customer":{"id":"3001"', b'"customer":{"id":"\\ud800"'),
     "body.customer.id: holds control characters or unpaired surrogates"),
    (order_body().replace(b'"event_id":"1001"', b'"event_id":["1001"]'), "event_id: must be a string, got array"),
    (order_body().replace(b'"event_id":"1001"', b'"event_id":null'), "event_id: must not be null"),
])
def test_hostile_signed_bodies_are_400_with_the_field_never_5xx(client: TestClient, publisher: RecordingPublisher,
                                                                body: bytes, detail: str) -> None:
    response = client.post(WEBHOOK, content=body, headers=signed_headers(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_payload" and set(response.json()) == {"error", "detail"}
    assert response.json()["detail"].startswith(detail)
    assert publisher.messages == []
