"""Reconcile cannot be used to mint points: it never keeps a webhook secret, recovers a credit only when PayNow's
orders / subscriptions endpoint confirms it, and sends its API key over https only (loopback excepted)."""
from __future__ import annotations

import argparse
import copy
from typing import Any

import httpx
import pytest

from ops import cli
from ops.admin import reconcile as rc
from ops.admin.paynow_api import InsecureUrl, ManagementApi, check_base_url
from ops.local.fake_paynow import FakePayNow
from schemas import deliveries
from tests.ops.admin.test_reconcile import NOW, OLD, ONE_TIME, Pipeline, by_event, order, run
from tests.ops.local.paynow_fake import Checked, api

MONTHLY = "458253675014389760"


def missing(fake: FakePayNow, delivery: dict[str, Any]) -> None:
    """A delivery PayNow gave up on: the ledger never saw it."""
    fake.add_delivery(delivery, state="failed", created_ms=OLD, attempts=[(OLD, 503)])


def credited(pipeline: Pipeline) -> dict[str, int]:
    return pipeline.model.wallets()


# -- confirmation -------------------------------------------------------------------------------------------


def test_a_confirmed_order_is_recovered() -> None:
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, order(1))
    report = run(fake, pipeline)
    assert [r.delivery.event_id for r in report.recovered] == ["evt_o1"] and report.ok
    assert credited(pipeline) == {"u1": 20}


@pytest.mark.parametrize(("tamper", "why"), [
    (None, "PayNow's orders endpoint has no order ord_1"),
    (lambda o: o.update(status="created"), "order ord_1 is 'created', not completed"),
    (lambda o: o.update(status="canceled"), "order ord_1 is 'canceled', not completed"),
    (lambda o: o.update(customer_id="cus_other"),
     "order ord_1 belongs to customer cus_other, the delivery names cus_1"),
    (lambda o: o["lines"][0].update(quantity=1), "order ord_1's lines differ from the delivery's"),
    (lambda o: o["lines"][0].update(product_id=MONTHLY), "order ord_1's lines differ from the delivery's"),
])
def test_an_order_completed_delivery_paynow_s_orders_do_not_confirm_is_reported_not_published(
        tamper: Any, why: str) -> None:
    """The history says "order ord_1, 5 x product, for cus_1": a history entry is not enough to credit anyone."""
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, order(1, quantity=5))
    if tamper is None:
        del fake.orders["ord_1"]
    else:
        tamper(fake.orders["ord_1"])
    report = run(fake, pipeline)
    row = by_event(report)["evt_o1"]
    assert row.category == rc.UNCONFIRMED and row.ledger_status.startswith(why) and not row.recovered
    assert pipeline.published == [] and credited(pipeline) == {}
    assert not report.ok and report.summary()[rc.UNCONFIRMED] == 1  # the job exits 1: someone looks
    dry = run(fake, Pipeline(), dry_run=True)
    assert by_event(dry)["evt_o1"].category == rc.UNCONFIRMED and dry.summary()["would recover"] == 0


def test_an_order_completed_before_the_window_is_confirmed_by_its_own_lookup() -> None:
    """The order list covers the window; an order created earlier (completed later) is fetched by id."""
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, order(1))
    fake.orders["ord_1"]["created_at"] = "2020-01-01T00:00:00.000Z"
    report = run(fake, pipeline)
    assert [r.delivery.event_id for r in report.recovered] == ["evt_o1"]
    assert ("GET", f"/v1/stores/{fake.store_id}/orders/ord_1") in {(m, p) for m, p in fake.requests}


def test_a_subscription_credit_needs_paynow_s_subscription_at_that_cycle() -> None:
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, deliveries.subscription_cycle("evt_s1", "sub_1", MONTHLY, 1, "cus_1", uid="u1"))
    forged = deliveries.subscription_cycle("evt_s9", "sub_1", MONTHLY, 9, "cus_1", uid="u1", renewed=True)
    missing(fake, forged)
    fake.store_subscriptions["sub_1"]["billing_cycle_sequence"] = 1  # PayNow billed cycle 1 only
    stranger = deliveries.subscription_cycle("evt_s2", "sub_2", MONTHLY, 1, "cus_1", uid="u1")
    missing(fake, stranger)
    del fake.store_subscriptions["sub_2"]
    report = run(fake, pipeline)
    rows = by_event(report)
    assert rows["evt_s1"].recovered
    assert rows["evt_s9"].category == rc.UNCONFIRMED and "billing cycle 1" in rows["evt_s9"].ledger_status
    assert rows["evt_s2"].category == rc.UNCONFIRMED and "no subscription sub_2" in rows["evt_s2"].ledger_status
    assert {r.delivery.event_id for r in report.recovered} == {"evt_s1"}


def test_debits_need_no_confirmation() -> None:
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, deliveries.refund("evt_r1", "ref_1", "ord_404", "completed"))
    assert [r.delivery.event_id for r in run(fake, pipeline).recovered] == ["evt_r1"]


# -- webhook secrets ----------------------------------------------------------------------------------------


def test_webhook_secrets_are_dropped_on_arrival() -> None:
    fake, pipeline = FakePayNow(secret="whsec_must_never_be_kept"), Pipeline()
    missing(fake, order(1))
    checked = Checked()
    client = api(fake, checked)
    subscriptions = client.webhooks(fake.store_id)
    assert subscriptions and all("secret" not in s for s in subscriptions)
    assert all("secret" in s for s in fake.webhooks.values())  # PayNow does send it
    said: list[str] = []
    report = rc.reconcile(client, pipeline, store_id=fake.store_id, since_ms=0, publish=pipeline, now_ms=NOW,
                          progress=said.append)
    assert report.recovered
    assert "whsec_must_never_be_kept" not in repr(report) + "".join(said)


def test_explicit_subscription_ids_never_ask_for_the_subscriptions() -> None:
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, order(1))
    hook = fake.subscription("OnOrderCompleted")["id"]
    rc.reconcile(api(fake, Checked()), pipeline, store_id=fake.store_id, since_ms=0, publish=pipeline,
                 webhook_ids=[hook], now_ms=NOW)
    assert f"/v1/stores/{fake.store_id}/webhooks" not in {p for _, p in fake.requests}


# -- where the key may go -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://api.paynow.gg", "http://127.0.0.1:8123", "http://[::1]:9/x",
                                 "http://localhost:8000", "http://127.9.9.9"])
def test_https_or_loopback_is_allowed(url: str) -> None:
    assert check_base_url(url) == url


@pytest.mark.parametrize("url", ["http://api.paynow.gg", "http://203.0.113.5:8080", "ftp://api.paynow.gg",
                                 "api.paynow.gg", "http://127.0.0.1.evil.example", "https://", "http://[::2]/",
                                 "file:///etc/passwd", "http://localhost.example.com"])
def test_anything_else_is_refused_before_the_key_is_sent(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[httpx.Request] = []
    monkeypatch.setattr(httpx.Client, "send", lambda self, request, **kw: sent.append(request))
    with pytest.raises(InsecureUrl, match="is not"):
        ManagementApi("pnapi_key_value", base_url=url)
    with pytest.raises(InsecureUrl, match="PAYNOW_API_URL"):
        rc.settings_from(argparse.Namespace(store="1", project="p-proj", api_url=url), {"paynowApi": {
            "apiKey": "pnapi_key_value"}})
    assert sent == []


def test_the_cli_refuses_a_plain_http_url_with_a_precise_error(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sent: list[object] = []
    monkeypatch.setattr(httpx.Client, "send", lambda self, request, **kw: sent.append(request))
    monkeypatch.setenv("PAYNOW_HOME", str(tmp_path))
    monkeypatch.setenv("PAYNOW_API_KEY", "pnapi_key_value")
    status = cli.main(["reconcile", "--since", "1h", "--dry-run", "--store", "1", "--project", "p-proj",
                       "--api-url", "http://api.paynow.gg"])
    out = capsys.readouterr().out
    assert status == 1 and sent == []
    assert "'http://api.paynow.gg' is not https" in " ".join(out.split()) and "pnapi_key_value" not in out
    assert rc.main(["--since", "1h", "--dry-run", "--store", "1", "--project", "p-proj",
                    "--api-url", "http://api.paynow.gg"]) == 1


def test_the_scenario_is_not_changed_by_a_deep_copy_of_a_confirmed_order() -> None:
    """Control for the tamper cases above: the same order, copied untouched, is still confirmed."""
    fake, pipeline = FakePayNow(), Pipeline()
    missing(fake, order(1, quantity=5, product=ONE_TIME))
    fake.orders["ord_1"] = copy.deepcopy(fake.orders["ord_1"])
    assert run(fake, pipeline).recovered
