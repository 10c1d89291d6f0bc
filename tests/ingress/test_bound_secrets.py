"""Secrets bound to PayNow event types: a subscription's secret verifies only deliveries of its own type."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from ingress import ConfigError, Settings, create_app
from ingress.signature import SignatureError, WebhookSecret, event_type_of, verify
from schemas import deliveries, signing
from tests.ingress.conftest import WEBHOOK, RecordingPublisher, make_settings, order_body

ORDERS = b"whsec-orders-0123456789"
REFUNDS = b"whsec-refunds-0123456789"
ANY = b"whsec-legacy-0123456789"
BOUND = {"PAYNOW_WEBHOOK_SECRETS": f"ON_ORDER_COMPLETED:{ORDERS.decode()}, ON_REFUND:{REFUNDS.decode()}"}
NOW = 1_780_000_000_000


def refund_body(event_id: str = "2001") -> bytes:
    return deliveries.encode(deliveries.refund(event_id, "ref_1", "ord_1", "completed"))


# -- settings -------------------------------------------------------------------------------------------


def test_entries_are_bound_or_bare() -> None:
    settings = Settings.from_env({"PAYNOW_WEBHOOK_SECRETS": f"ON_ORDER_COMPLETED:{ORDERS.decode()} , {ANY.decode()}"})
    assert settings.webhook_secrets == (WebhookSecret(ORDERS, "ON_ORDER_COMPLETED"), WebhookSecret(ANY))
    assert settings.unbound_secrets == 1


def test_one_variable_per_subscription_binds_its_secrets_to_its_type() -> None:
    """What Cloud Run gets from Terraform: one Secret Manager secret per subscription, each in its own variable,
    holding that subscription's secrets (two during a rotation's overlap)."""
    settings = Settings.from_env({"PAYNOW_WEBHOOK_SECRETS_ON_ORDER_COMPLETED": "whsec_new,whsec_old",
                                  "PAYNOW_WEBHOOK_SECRETS_ON_REFUND": "ON_REFUND:whsec_r"})
    assert settings.webhook_secrets == (WebhookSecret(b"whsec_new", "ON_ORDER_COMPLETED"),
                                        WebhookSecret(b"whsec_old", "ON_ORDER_COMPLETED"),
                                        WebhookSecret(b"whsec_r", "ON_REFUND"))
    assert settings.unbound_secrets == 0


@pytest.mark.parametrize(("env", "setting", "problem"), [
    ({"PAYNOW_WEBHOOK_SECRETS": "ON_ORDER_COMPLETE:whsec_x"}, "PAYNOW_WEBHOOK_SECRETS",
     "entry 1: 'ON_ORDER_COMPLETE' is not a PayNow event type"),
    ({"PAYNOW_WEBHOOK_SECRETS": "whsec_a,on_refund:whsec_b"}, "PAYNOW_WEBHOOK_SECRETS",
     "entry 2: the text before ':' (not shown) is not a PayNow event type"),
    ({"PAYNOW_WEBHOOK_SECRETS": "whsec_x:whsec_y"}, "PAYNOW_WEBHOOK_SECRETS",  # a bare secret holding ':'
     "entry 1: the text before ':' (not shown) is not a PayNow event type"),
    ({"PAYNOW_WEBHOOK_SECRETS": "ON_REFUND:"}, "PAYNOW_WEBHOOK_SECRETS", "entry 1 holds an empty secret"),
    ({"PAYNOW_WEBHOOK_SECRETS": "ON_REFUND:a:b"}, "PAYNOW_WEBHOOK_SECRETS", "entry 1 has more than one ':'"),
    ({"PAYNOW_WEBHOOK_SECRETS_ON_REFUNDS": "whsec_x"}, "PAYNOW_WEBHOOK_SECRETS_ON_REFUNDS",
     "'ON_REFUNDS' is not a PayNow event type"),
    ({"PAYNOW_WEBHOOK_SECRETS_ON_REFUND": "ON_ORDER_COMPLETED:whsec_x"}, "PAYNOW_WEBHOOK_SECRETS_ON_REFUND",
     "entry 1 is bound to ON_ORDER_COMPLETED, not to ON_REFUND"),
    ({"PAYNOW_WEBHOOK_SECRETS_ON_REFUND": "whsec_x,,"}, "PAYNOW_WEBHOOK_SECRETS_ON_REFUND",
     "entry 2 holds an empty secret"),
])
def test_a_bad_entry_fails_at_start_naming_the_variable_and_the_entry(env: dict[str, str], setting: str,
                                                                      problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting and str(caught.value).startswith(f"{setting}: {problem}")
    assert "whsec_x" not in str(caught.value)


def test_every_paynow_event_type_can_be_bound() -> None:
    for event_type in deliveries.event_type_enum():
        assert Settings.from_env({f"PAYNOW_WEBHOOK_SECRETS_{event_type}": "s"}).webhook_secrets[0].event_type == (
            event_type)


def test_secrets_stay_out_of_repr() -> None:
    assert ORDERS.decode() not in repr(Settings.from_env(BOUND))


# -- verification ---------------------------------------------------------------------------------------


def check(body: bytes, secret: bytes, secrets: tuple[WebhookSecret, ...]) -> int:
    return verify(secrets, str(NOW), signing.signature(secret, NOW, body), body, now_ms=NOW)


BOUND_SECRETS = (WebhookSecret(ORDERS, "ON_ORDER_COMPLETED"), WebhookSecret(REFUNDS, "ON_REFUND"))


def test_a_bound_secret_verifies_its_own_type() -> None:
    assert check(order_body(), ORDERS, BOUND_SECRETS) == NOW
    assert check(refund_body(), REFUNDS, BOUND_SECRETS) == NOW


def test_a_bound_secret_is_refused_for_another_type() -> None:
    with pytest.raises(SignatureError) as caught:
        check(order_body(), REFUNDS, BOUND_SECRETS)
    assert (caught.value.status, caught.value.code, caught.value.authenticated) == (
        401, "secret_bound_to_other_event_type", False)
    assert caught.value.detail == ("paynow-signature matches a secret bound to ON_REFUND, but this delivery's "
                                   "event_type is ON_ORDER_COMPLETED")


def test_a_bare_secret_verifies_any_type() -> None:
    secrets = (*BOUND_SECRETS, WebhookSecret(ANY))
    assert check(order_body(), ANY, secrets) == NOW and check(refund_body(), ANY, secrets) == NOW


@pytest.mark.parametrize(("body", "readable"), [
    (b'{"event_type": "ON_REFUND"}', "ON_REFUND"),
    (b'{"event_type": 7}', None),
    (b'["ON_REFUND"]', None),
    (b'{"body": {"event_type": "ON_REFUND"}}', None),  # only the top level counts
    (b"[" * 100_000 + b"]" * 100_000, None),  # deeper than any parser's recursion
    (b'{"event_type": "ON_REFUND", "n": ' + b"9" * 5000 + b"}", None),  # past Python's int digits limit
    (b'\xff\xfe{"event_type": "ON_REFUND"}', None),
    (b'{"event_type": "' + b"A" * 65 + b'"}', None),
    (b"", None),
])
def test_the_event_type_is_read_safely(body: bytes, readable: str | None) -> None:
    assert event_type_of(body) == readable


@pytest.mark.parametrize("body", [b'{"event_type": "ON_ORDER_COMPLETED", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                  b"not json", b'{"event_type": null}'])
def test_a_bound_secret_on_an_unreadable_body_is_a_401(body: bytes) -> None:
    with pytest.raises(SignatureError) as caught:
        check(body, ORDERS, BOUND_SECRETS)
    assert caught.value.code == "secret_bound_to_other_event_type" and "no readable event_type" in caught.value.detail


# -- the app ----------------------------------------------------------------------------------------------


@pytest.fixture
def bound() -> Any:
    publisher = RecordingPublisher()
    with TestClient(create_app(make_settings(**BOUND, RATE_LIMIT_PER_MINUTE="0"), publisher=publisher)) as client:
        yield client, publisher


def test_the_ingress_takes_each_type_with_its_own_secret_only(bound: Any) -> None:
    client, publisher = bound
    order, refund = order_body("3001"), refund_body("3002")
    assert client.post(WEBHOOK, content=order, headers=signing.signed_headers(ORDERS, order)).status_code == 202
    assert client.post(WEBHOOK, content=refund, headers=signing.signed_headers(REFUNDS, refund)).status_code == 202
    forged = order_body("3003")  # an order signed with the (leaked) refunds secret
    response = client.post(WEBHOOK, content=forged, headers=signing.signed_headers(REFUNDS, forged))
    assert response.status_code == 401
    assert response.json() == {"error": "secret_bound_to_other_event_type",
                               "detail": "paynow-signature matches a secret bound to ON_REFUND, but this delivery's "
                                         "event_type is ON_ORDER_COMPLETED"}
    assert len(publisher.messages) == 2


def test_a_bare_secret_is_a_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingress"):
        env = {"PAYNOW_WEBHOOK_SECRETS": f"ON_REFUND:{REFUNDS.decode()},{ANY.decode()}"}
        with TestClient(create_app(make_settings(**env), publisher=RecordingPublisher())):
            pass
    [record] = [r for r in caplog.records if r.getMessage() == "webhook secrets not bound to an event type"]
    assert record.levelno == logging.WARNING and "1 of 2 webhook secrets" in record.detail  # type: ignore[attr-defined]
    assert ANY.decode() not in caplog.text and REFUNDS.decode() not in caplog.text


def test_all_bound_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingress"), TestClient(
            create_app(make_settings(**BOUND), publisher=RecordingPublisher())):
        pass
    assert "not bound" not in caplog.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                                   lambda inner: st.lists(inner, max_size=4)
                                   | st.dictionaries(st.sampled_from(["event_type", "body", "id", "x"]), inner,
                                                     max_size=4)).map(lambda v: repr(v).encode())),
       secret=st.sampled_from([ORDERS, REFUNDS]))
def test_hostile_bodies_signed_with_a_bound_secret_never_5xx(bound: Any, body: bytes, secret: bytes) -> None:
    client, _ = bound
    status = client.post(WEBHOOK, content=body, headers=signing.signed_headers(secret, body)).status_code
    assert status in (400, 401), status


def test_a_rotation_s_overlap_then_the_old_secret_is_refused() -> None:
    """RUNBOOK "Secret rotation": the type's secret holds "NEW,OLD" during the overlap, then "NEW" alone."""
    body = order_body("4001")

    def status(value: str, secret: bytes) -> int:
        env = {"PAYNOW_WEBHOOK_SECRETS": "", "PAYNOW_WEBHOOK_SECRETS_ON_ORDER_COMPLETED": value,
               "RATE_LIMIT_PER_MINUTE": "0"}  # blank: no bare secrets
        with TestClient(create_app(make_settings(**env), publisher=RecordingPublisher())) as client:
            return client.post(WEBHOOK, content=body, headers=signing.signed_headers(secret, body)).status_code

    assert status("whsec_new,whsec_old", b"whsec_new") == 202 and status("whsec_new,whsec_old", b"whsec_old") == 202
    assert status("whsec_new", b"whsec_new") == 202 and status("whsec_new", b"whsec_old") == 401
