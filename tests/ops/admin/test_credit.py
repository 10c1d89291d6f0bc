"""`paynow credit`: precise refusals of bad input; on the emulators, a manual credit through the commit plan that a
later order and its refund (through the real pipeline) never wedge, judged by the independent model."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from google.cloud import firestore, pubsub_v1

from ops.cli import main
from ops.load.ledger_model import LedgerModel
from ops.local.pipeline_worker import PipelineProcess, publish_payloads, publisher, wait_until
from ops.local.topology import Topology
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state
from tests.pipeline.test_graph import dlq_verdicts
from tests.pipeline.test_isolation import hand_credit


@pytest.mark.parametrize(("argv", "message"), [
    (["--uid", "__x__", "--points", "5", "--reason", "r"], "argument --uid: '__x__' is not a valid uid"),
    (["--uid", "a/b", "--points", "5", "--reason", "r"], "argument --uid: 'a/b' is not a valid uid"),
    (["--uid", "u1", "--points", "0", "--reason", "r"], "argument --points: must not be 0"),
    (["--uid", "u1", "--points", "1.5", "--reason", "r"], "argument --points: '1.5' is not a whole number"),
    (["--uid", "u1", "--points", "5", "--reason", "  "], "argument --reason: must be 1-500 printable"),
    (["--uid", "u1", "--points", "5", "--reason", "r", "--order", "o/1"], "argument --order: 'o/1' is not a valid"),
    (["--uid", "u1", "--points", "5", "--reason", "r", "--key", "k" * 122], "argument --key:"),
    (["--uid", "u1", "--points", "-5", "--reason", "r", "--order", "o1", "--project", "p"],
     "an order is credited with positive points"),
    (["--points", "5", "--reason", "r"], "the following arguments are required: --uid"),
])
def test_bad_input_is_refused_with_exit_2_and_the_reason(argv: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["credit", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["credit", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--uid", "--points", "--reason", "--order", "--key", "--project"))


def credit(project: str, *argv: str) -> int:
    return main(["credit", "--project", project, *argv])


def test_a_manual_order_credit_then_the_order_and_its_refund_through_the_pipeline(
        topology: Topology, firestore_db: firestore.Client, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The webhook was late; support credited the order by hand (70 points, not the catalog's 150). Then the order
    and a completed refund arrive: both committed and acknowledged promptly, the refund reverses the 70."""
    args = ["--uid", "u1", "--points", "70", "--reason", "webhook late, ticket 4711", "--order", "o1"]
    assert credit(topology.project, *args) == 0
    assert "credited +70 points to u1 (order o1; entries purchase:o1)" in capsys.readouterr().out
    assert credit(topology.project, *args) == 0  # idempotent
    assert "already done" in capsys.readouterr().out
    assert credit(topology.project, "--uid", "u2", "--points", "10", "--reason", "other", "--order", "o1") == 1
    assert "order o1 was already credited" in capsys.readouterr().out
    model = LedgerModel(f.POINTS, {})
    model.credit("ticket-4711", "u1", 70, "o1")
    assert read_state(firestore_db).wallets == model.wallets() == {"u1": 70}

    deliveries = [f.order("e1", "o1", [(f.P150, 1)], uid="u1"), f.refund("r1", "o1")]
    with PipelineProcess(topology, log_dir=tmp_path) as pipe:
        sent = time.monotonic()
        publish_payloads(publisher(), topology.topic, deliveries)
        assert wait_until(lambda: all(firestore_db.document(f"webhookEvents/{e}").get().exists
                                      for e in ("e1", "r1")), 120), pipe.log()[-3000:]
        handled = time.monotonic() - sent
        assert wait_until(lambda: unacked(topology) == 0, 60), pipe.log()[-3000:]
        log = pipe.log()
    assert "event released for redelivery" not in log
    assert dlq_verdicts(topology, 1, timeout=3) == set()
    for delivery in deliveries:
        model.add(delivery)
    state = read_state(firestore_db)
    check_invariants(state)
    assert state.events["e1"]["status"] == "duplicate_business_key" and state.events["r1"]["status"] == "applied"
    assert state.wallets == model.wallets() == {"u1": 0}
    assert state.amounts("u1") == {k: amount for k, (_, amount) in model.keys().items()} == {
        "purchase:o1": 70, "reversal:o1": -70}
    print(f"order and refund after a manual credit: committed {handled:.1f} s after publishing")


def unacked(topology: Topology) -> int:
    """Messages the pipeline's subscription still holds (seen by a pull that gives them straight back)."""
    subscriber = pubsub_v1.SubscriberClient()
    try:
        response = subscriber.pull(request={"subscription": topology.subscription, "max_messages": 10}, timeout=5)
        if response.received_messages:
            subscriber.modify_ack_deadline(request={"subscription": topology.subscription, "ack_deadline_seconds": 0,
                                                    "ack_ids": [r.ack_id for r in response.received_messages]})
        return len(response.received_messages)
    finally:
        subscriber.close()


def test_debits_and_credits_without_an_order_are_idempotent_by_key(
        topology: Topology, firestore_db: firestore.Client, capsys: pytest.CaptureFixture[str]) -> None:
    assert credit(topology.project, "--uid", "u1", "--points", "500", "--reason", "goodwill", "--key", "g-1") == 0
    assert credit(topology.project, "--uid", "u1", "--points", "-120", "--reason", "abuse") == 0
    assert credit(topology.project, "--uid", "u1", "--points", "-120", "--reason", "abuse") == 0  # the same again
    assert credit(topology.project, "--uid", "u1", "--points", "500", "--reason", "changed text", "--key", "g-1") == 0
    out = capsys.readouterr().out
    assert out.count("already done") == 2
    model = LedgerModel(f.POINTS, {})
    model.credit("g-1", "u1", 500)
    model.credit("abuse", "u1", -120)
    model.credit("abuse", "u1", -120)
    state = read_state(firestore_db)
    check_invariants(state)
    assert state.wallets == model.wallets() == {"u1": 380}
    entry = state.entries["u1"]["manual:g-1"]
    assert (entry["source"], entry["kind"], entry["reason"]) == ("manual", "manual", "goodwill")


def test_a_credit_on_a_key_already_held_by_hand_is_refused_as_wedged(
        topology: Topology, firestore_db: firestore.Client, capsys: pytest.CaptureFixture[str]) -> None:
    hand_credit(firestore_db, "u1", "purchase:o9", 150)
    assert credit(topology.project, "--uid", "u1", "--points", "150", "--reason", "again", "--order", "o9") == 1
    assert "purchase:o9 is held outside the commit plan" in capsys.readouterr().out
    assert not firestore_db.document("orders/o9").get().exists
