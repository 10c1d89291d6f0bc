"""The auditor: a clean ledger (written by hand from the spec's rules) and its traffic pass; each planted drift is
caught. In-memory snapshots (no emulator), plus one round trip through the Firestore emulator for `Snapshot.read`."""
from __future__ import annotations

import copy
import datetime as dt
import time
from typing import Any

import pytest
from google.cloud import firestore

from ops.admin import audit
from ops.load.traffic_log import Context
from schemas import deliveries

NOW = int(time.time() * 1000)
DAY = 86_400_000
U1, U2, OLD = "u_r1_1", "u_r1_2", "u_old_3"  # run r1's users; OLD predates the logs
P50, P20, PRO = "458255405240287232", "459935272365195264", "458254106331451392"  # 50, 20, 150 points/cycle
CATALOG = {P50: 50, P20: 20, PRO: 150}
EU = {"e5", "e6", "e8", "e9", "e10", "e11", "e13"}  # answered (and recorded) by europe-west1, the rest by us-central1


def _region(event_id: str) -> str:
    return "europe-west1" if event_id in EU else "us-central1"


def _entry(key: str, amount: int, event: str, created: int = NOW - DAY) -> dict[str, Any]:
    return {"amount": amount, "eventId": event, "createdAt": created, "source": "paynow"}


def _clean() -> audit.Snapshot:
    """o1 bought and refunded; o2 charged back and won; o3 won, then refunded (reinstatement voided); a subscription
    cycle; o4 only refunded (no order yet); o5 of subscription lines only; OLD's 31-day-old purchase (event expired)."""
    ledger = {
        (U1, "purchase:o1"): _entry("purchase:o1", 70, "e1"), (U1, "reversal:o1"): _entry("reversal:o1", -70, "e2"),
        (U1, "purchase:o2"): _entry("purchase:o2", 50, "e3"), (U1, "reversal:o2"): _entry("reversal:o2", -50, "e4"),
        (U1, "reinstatement:o2"): _entry("reinstatement:o2", 50, "e5"),
        (U2, "purchase:o3"): _entry("purchase:o3", 20, "e6"), (U2, "reversal:o3"): _entry("reversal:o3", -20, "e7"),
        (U2, "reinstatement:o3"): _entry("reinstatement:o3", 20, "e7"),
        (U2, "reinstatement-void:o3"): _entry("reinstatement-void:o3", -20, "e8"),
        (U2, "subscription:s1:1"): _entry("subscription:s1:1", 150, "e9"),
        (OLD, "purchase:o6"): _entry("purchase:o6", 20, "e0", created=NOW - 31 * DAY),
    }
    claims = {key: {"uid": uid, "eventId": e["eventId"], "amount": e["amount"]} for (uid, key), e in ledger.items()}
    events: dict[str, dict[str, Any]] = {}
    for (uid, key), e in ledger.items():
        if e["eventId"] != "e0":  # expired with the TTL
            events.setdefault(e["eventId"], {"uid": uid, "status": "applied", "entryIds": [],
                                             "region": _region(e["eventId"])})["entryIds"].append(key)
    for event_id, status in (("e10", "recorded"), ("e11", "recorded"), ("e13", "ignored")):
        events[event_id] = {"uid": None, "status": status, "entryIds": [], "region": _region(event_id)}

    def order(uid: str | None, amount: int | None, entries: list[str], **flags: bool) -> dict[str, Any]:
        base = {"purchased": False, "reversalCause": False, "refunded": False, "won": False}
        return {"uid": uid, "amount": amount, **base, **flags, "entries": entries}
    orders = {
        "o1": order(U1, 70, ["purchase:o1", "reversal:o1"], purchased=True, reversalCause=True, refunded=True),
        "o2": order(U1, 50, ["purchase:o2", "reversal:o2", "reinstatement:o2"], purchased=True, reversalCause=True,
                    won=True),
        "o3": order(U2, 20, ["purchase:o3", "reversal:o3", "reinstatement:o3", "reinstatement-void:o3"],
                    purchased=True, reversalCause=True, won=True, refunded=True),
        "o4": order(None, None, [], reversalCause=True, refunded=True),
        "o5": order(U1, 0, [], purchased=True),
        "o6": order(OLD, 20, ["purchase:o6"], purchased=True),
    }
    return audit.Snapshot({U1: 50, U2: 150, OLD: 20}, ledger, events, claims, orders)


def _order(event: str, order_id: str, uid: str | None, lines: list[dict[str, Any]], customer: str = "c1"
           ) -> dict[str, Any]:
    return deliveries.order_completed(event, order_id, customer, lines, uid=uid)


def _hook(delivery: dict[str, Any], ok: bool = True) -> dict[str, Any]:
    return {"kind": "webhook", "eventId": delivery["event_id"], "eventType": delivery["event_type"], "ok": ok,
            "region": _region(delivery["event_id"]), "delivery": delivery, "scenario": "test"}


def _traffic() -> list[dict[str, Any]]:
    line = deliveries.order_line
    sub_line = line("l9", PRO, 1, subscription_id="s9")
    hooks = [
        _hook(_order("e1", "o1", U1, [line("l1", P50), line("l2", P20)])),
        _hook(deliveries.refund("e2", "r1", "o1", "completed")),
        _hook(_order("e3", "o2", U1, [line("l3", P50)])),
        _hook(deliveries.chargeback("e4", "p2", "o2", "open")),
        _hook(deliveries.chargeback("e5", "p2", "o2", "won", closed=True)),
        _hook(_order("e6", "o3", U2, [line("l4", P20)])),
        _hook(deliveries.chargeback("e7", "p3", "o3", "won", closed=True)),
        _hook(deliveries.refund("e8", "r3", "o3", "completed")),
        _hook(deliveries.subscription_cycle("e9", "s1", PRO, 1, "c2", uid=U2)),
        _hook(deliveries.refund("e10", "r4", "o4", "completed")),
        _hook(_order("e11", "o5", U1, [sub_line])),
        _hook(_order("e12", "o7", None, [line("l5", P50)], customer="c_unmapped")),
        _hook(deliveries.no_effect("ON_PAYMENT_COMPLETED", "e13")),
        _hook(_order("e14", "o8", U2, [line("l6", P50)]), ok=False),  # never accepted: the model never sees it
    ]
    v1 = {"kind": "legacy", "eventId": "v1", "eventType": "ON_ORDER_COMPLETED", "ok": True, "delivery": None,
          "verdict": "drop_incompatible", "scenario": "legacy_v1"}
    return [*hooks, v1]


DLQ = {"e12": "unmapped_customer", "v1": "drop_incompatible"}
CONTEXT = Context(run_ids={"r1"}, catalog=CATALOG, customers={})


def _audit(snapshot: audit.Snapshot, traffic: list[dict[str, Any]] | None = None, dlq: dict[str, str] | None = None,
           **kwargs: Any) -> audit.Report:
    return audit.audit(snapshot, traffic=traffic, dlq=DLQ if dlq is None else dlq, context=CONTEXT, now_ms=NOW,
                       **kwargs)


def _details(report: audit.Report) -> list[tuple[str, str]]:
    return [(c.name, c.detail) for c in report.checks if not c.ok]


def test_a_clean_ledger_and_its_traffic_pass() -> None:
    report = _audit(_clean(), _traffic())
    assert report.ok, _details(report)
    assert report.get(audit.WALLETS).value == "3/3"
    assert report.get(audit.MODEL_WALLETS).value == "2/2"
    assert report.get(audit.MODEL_PRESENT).value == "8/8"  # o3's voided reinstatement pair nets to zero: not in it
    assert report.get("accepted events (2xx or published)").value == "14"
    assert report.get("  … with a webhookEvents doc / a DLQ record").value == "12 / 2"


def test_on_day_31_an_entry_whose_event_expired_still_passes_and_a_longer_ttl_would_flag_it() -> None:
    assert _audit(_clean()).ok
    assert _audit(_clean()).get(audit.ORPHANS).value == "0 of 10 (1 older, not checked)"
    report = _audit(_clean(), events_ttl_days=40)
    assert report.failing() == {audit.ORPHANS}
    assert f"{OLD}/purchase:o6 (event e0)" in report.get(audit.ORPHANS).detail


def test_a_young_entry_without_its_event_is_caught() -> None:
    snapshot = _clean()
    del snapshot.events["e9"]
    assert _audit(snapshot).failing() == {audit.ORPHANS}


def test_a_wallet_off_by_one_is_caught() -> None:
    snapshot = _clean()
    snapshot.wallets[U2] += 1
    report = _audit(snapshot)
    assert report.failing() == {audit.WALLETS}
    assert f"{U2}: wallet 151 ≠ ledger 150" in report.get(audit.WALLETS).detail
    assert _audit(snapshot, _traffic()).failing() == {audit.WALLETS, audit.MODEL_WALLETS}


def test_a_doubled_key_is_caught() -> None:
    """purchase:o1 credited to a second user too (wallet kept equal to its ledger, so only the key check sees it)."""
    snapshot = _clean()
    snapshot.ledger[(U2, "purchase:o1")] = _entry("purchase:o1", 70, "e1b")
    snapshot.wallets[U2] += 70
    snapshot.events["e1b"] = {"uid": U2, "status": "applied", "entryIds": ["purchase:o1"], "region": "x"}
    report = _audit(snapshot)
    assert {audit.KEY_TWICE, audit.UNCLAIMED, audit.TWO_EVENTS} <= report.failing()
    assert f"purchase:o1: ['{U1}', '{U2}']" in report.get(audit.KEY_TWICE).detail


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda s: s.orders["o2"].update(won=False), "reinstatement without a won closing"),
    (lambda s: s.orders["o1"].update(amount=60), "purchase amount 70, aggregate amount 60"),
    (lambda s: s.orders["o2"]["entries"].remove("reinstatement:o2"), "aggregate lists"),
    (lambda s: s.orders["o1"].update(reversalCause=False), "reversal not due"),
    (lambda s: s.orders["o5"].update(amount=20), "purchase missing"),
    (lambda s: s.orders["o2"].update(refunded=True), "net 50, flags imply 0"),
    (lambda s: s.orders.pop("o3"), "but no aggregate"),
    (lambda s: s.orders["o3"].update(uid=U1), f"credited to {U2}, aggregate uid {U1}"),
])
def test_an_aggregate_inconsistent_with_its_entries_is_caught(mutate: Any, problem: str) -> None:
    snapshot = _clean()
    mutate(snapshot)
    report = _audit(snapshot)
    assert report.failing() == {audit.AGGREGATES}, _details(report)
    assert problem in report.get(audit.AGGREGATES).detail


def test_claims_and_entries_must_match_one_to_one() -> None:
    snapshot = _clean()
    snapshot.claims["purchase:o9"] = {"uid": U1, "eventId": "e99", "amount": 5}
    assert _audit(snapshot).failing() == {audit.UNUSED_CLAIMS}
    snapshot = _clean()
    snapshot.claims["purchase:o1"]["amount"] = 71
    assert _audit(snapshot).failing() == {audit.UNCLAIMED}
    snapshot = _clean()
    snapshot.events["e13"]["entryIds"] = ["purchase:o77"]
    assert _audit(snapshot).failing() == {audit.DANGLING}


def test_an_orders_key_is_claimed_by_its_aggregate_and_nothing_else_stands_in_for_a_claim() -> None:
    """Since the pipeline stopped writing ledgerKeys docs for order keys, the aggregate listing the key for the
    same user is its claim; a subscription key still needs its ledgerKeys doc."""
    snapshot = _clean()
    for key in [k for k in snapshot.claims if not k.startswith("subscription:")]:
        del snapshot.claims[key]
    assert _audit(snapshot, _traffic()).ok
    snapshot.orders["o1"]["entries"].remove("reversal:o1")  # listed by no aggregate: unclaimed (and inconsistent)
    assert _audit(snapshot).failing() == {audit.UNCLAIMED, audit.AGGREGATES}
    snapshot = _clean()
    del snapshot.claims["purchase:o1"]
    snapshot.orders["o1"]["uid"] = U2  # listed, but for another user
    assert audit.UNCLAIMED in _audit(snapshot).failing()
    snapshot = _clean()
    del snapshot.claims["subscription:s1:1"]
    assert _audit(snapshot).failing() == {audit.UNCLAIMED}


def test_a_ledger_internally_consistent_but_not_what_was_paid_for_is_caught_by_the_model() -> None:
    """o3's refund (e8) lost its effect everywhere at once: wallet, void entry, claim, event, aggregate flag."""
    snapshot = _clean()
    del snapshot.ledger[(U2, "reinstatement-void:o3")], snapshot.claims["reinstatement-void:o3"]
    snapshot.events["e8"]["entryIds"] = []
    snapshot.orders["o3"].update(refunded=False, entries=["purchase:o3", "reversal:o3", "reinstatement:o3"])
    snapshot.wallets[U2] += 20
    assert _audit(snapshot).ok  # every internal check passes
    report = _audit(snapshot, _traffic())
    assert report.failing() == {audit.MODEL_WALLETS, audit.MODEL_EXTRA}
    assert f"{U2}: wallet 170, model 150" in report.get(audit.MODEL_WALLETS).detail


@pytest.mark.parametrize(("mutate", "failing"), [
    (lambda t, d: d.pop("e12"), {audit.LOST}),
    (lambda t, d: d.update(v1="drop_malformed"), {audit.VERDICTS}),
    (lambda t, d: d.update(e12="unmapped_product"), {audit.VERDICTS}),
    (lambda t, d: d.update(e1="write_failed"), set()),  # processed after all: its webhookEvents doc counts
    (lambda t, d: t.append(_hook(_order("e15", "o1", U1, [deliveries.order_line("l1", P50)]))),
     {audit.LOST}),  # a re-send of o1 nobody processed (and the model credits nothing new for it)
    (lambda t, d: t.append(_hook(deliveries.subscription_cycle("e16", "s1", PRO, 2, "c2", uid=U2))),
     {audit.LOST, audit.MODEL_PRESENT, audit.MODEL_WALLETS}),
    (lambda t, d: t.__setitem__(1, _hook(deliveries.refund("e2", "r1", "o1", "processing"))),
     {audit.MODEL_EXTRA, audit.MODEL_WALLETS}),  # a refund still processing must not reverse o1
])
def test_traffic_drift_is_caught(mutate: Any, failing: set[str]) -> None:
    traffic, dlq = copy.deepcopy(_traffic()), dict(DLQ)
    mutate(traffic, dlq)
    assert _audit(_clean(), traffic, dlq).failing() == failing


def test_a_mapping_and_a_replay_in_the_log_credit_the_dead_letter() -> None:
    snapshot = _clean()
    snapshot.ledger[("u_r1_9", "purchase:o7")] = _entry("purchase:o7", 50, "e12")
    snapshot.claims["purchase:o7"] = {"uid": "u_r1_9", "eventId": "e12", "amount": 50}
    snapshot.events["e12"] = {"uid": "u_r1_9", "status": "applied", "entryIds": ["purchase:o7"],
                              "region": "us-central1"}
    snapshot.orders["o7"] = {"uid": "u_r1_9", "amount": 50, "purchased": True, "reversalCause": False,
                             "refunded": False, "won": False, "entries": ["purchase:o7"]}
    snapshot.wallets["u_r1_9"] = 50
    dlq = {"v1": "drop_incompatible"}  # replayed and acked
    assert _audit(snapshot, _traffic(), dlq).failing() == {audit.MODEL_EXTRA, audit.MODEL_WALLETS, audit.VERDICTS}
    traffic = [*_traffic(), {"kind": "mapping", "customerId": "c_unmapped", "uid": "u_r1_9"},
               {"kind": "replay", "eventIds": ["e12"]}]
    report = _audit(snapshot, traffic, dlq)
    assert report.ok, _details(report)


def test_regional_shares_must_match_what_each_region_acknowledged() -> None:
    snapshot = _clean()
    traffic = _traffic()
    for i in range(20):  # 20 more events the US acknowledged but recorded as EU: shares drift
        snapshot.events[f"r{i}"] = {"uid": None, "entryIds": [], "status": "ignored", "region": "europe-west1"}
        EU.discard(f"r{i}")
        traffic.append(_hook(deliveries.no_effect("ON_TRIAL_ACTIVATED", f"r{i}")))
    report = _audit(snapshot, traffic)
    assert report.failing() == {"regional shares (acked vs recorded)"}
    assert report.get("events recorded in a region that did not ack them").value == "20"


def _write(db: firestore.Client, snapshot: audit.Snapshot) -> None:
    for uid, balance in snapshot.wallets.items():
        db.document(f"users/{uid}/wallet/points").set({"paidBalance": balance, "promoBalance": 0})
    for (uid, key), entry in snapshot.ledger.items():
        created = dt.datetime.fromtimestamp(entry["createdAt"] / 1000, dt.UTC)
        db.document(f"users/{uid}/ledger/{key}").set({**entry, "createdAt": created})
    for collection, docs in (("webhookEvents", snapshot.events), ("ledgerKeys", snapshot.claims),
                             ("orders", snapshot.orders)):
        for doc_id, doc in docs.items():
            db.document(f"{collection}/{doc_id}").set(doc)


def test_snapshot_read_from_firestore_round_trips(firestore_db: firestore.Client) -> None:
    clean = _clean()
    _write(firestore_db, clean)
    read = audit.Snapshot.read(firestore_db)
    assert read.wallets == clean.wallets and read.claims == clean.claims and read.orders == clean.orders
    assert read.events == clean.events and set(read.ledger) == set(clean.ledger)
    report = _audit(read, _traffic())
    assert report.ok, _details(report)
    assert report.get(audit.ORPHANS).value == "0 of 10 (1 older, not checked)"
    firestore_db.document(f"users/{U1}/wallet/points").set({"paidBalance": 51})
    assert audit.run(firestore_db).failing() == {audit.WALLETS}


def test_a_delivery_paynow_gave_up_on_and_the_reconciler_recovered_counts_once_recorded() -> None:
    """e14 (o8, 50 points for U2) was never answered 2xx; the reconciler published it later."""
    snapshot = _clean()
    snapshot.ledger[(U2, "purchase:o8")] = _entry("purchase:o8", 50, "e14")
    snapshot.claims["purchase:o8"] = {"uid": U2, "eventId": "e14", "amount": 50}
    snapshot.events["e14"] = {"uid": U2, "status": "applied", "entryIds": ["purchase:o8"], "region": "us-central1"}
    snapshot.orders["o8"] = {"uid": U2, "amount": 50, "purchased": True, "reversalCause": False, "refunded": False,
                             "won": False, "entries": ["purchase:o8"]}
    snapshot.wallets[U2] += 50
    assert _audit(snapshot, _traffic()).failing() == {audit.MODEL_WALLETS, audit.MODEL_EXTRA}
    report = _audit(snapshot, [*_traffic(), {"kind": "recovered", "eventIds": ["e14"]}])
    assert report.ok, _details(report)
    assert report.get("accepted events (2xx or published)").value == "15"

