"""The `paynow` command line: help, precise errors with exit status 2, and seeding/DLQ against the emulators."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.cloud import firestore

from ops import cli
from ops.local.topology import Topology


@pytest.fixture(autouse=True)
def _no_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNOW_HOME", str(tmp_path / "home"))


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "down", "status", "traffic", "audit", "dlq", "drill", "seed", "demo"):
        assert f"    {command} " in out


@pytest.mark.parametrize(("argv", "message"), [
    ([], "required: COMMAND"),
    (["fly"], "invalid choice: 'fly'"),
    (["traffic", "--rate", "0"], "--rate: must be positive, got 0"),
    (["traffic", "--duration", "soon"], "'soon' is not a number"),
    (["drill", "meteor"], "invalid choice: 'meteor'"),
    (["drill", "happy", "--duration", "-5"], "must be positive"),
    (["dlq"], "required: ACTION"),
    (["dlq", "list", "--verdict", "nope"], "invalid choice: 'nope'"),
    (["dlq", "list", "--limit", "0"], "--limit: must be positive"),
    (["dlq", "show"], "EVENT_ID"),
    (["dlq", "list", "--state", "lost"], "invalid choice: 'lost'"),
    (["dlq", "list", "--older-than", "8 days"], "expected a duration like 30m, 6h or 2d, got '8 days'"),
    (["audit", "--traffic-log", "/nonexistent.jsonl"], "no such file: /nonexistent.jsonl"),
    (["seed", "--map", "cus_1"], "expected CUSTOMER_ID=UID, got 'cus_1'"),
    (["seed", "--map", "=u1"], "expected CUSTOMER_ID=UID"),
])
def test_bad_input_is_refused_precisely(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert message in _error(capsys, argv)


def test_commands_that_need_a_stack_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--once"]) == 1
    assert "no running stack" in capsys.readouterr().out
    assert cli.main(["down"]) == 1
    assert "no stack to stop" in capsys.readouterr().out
    assert "no running stack: give --project" in _error(capsys, ["dlq", "list"])
    assert "no running stack: give --project" in _error(capsys, ["audit"])


def test_replay_without_a_filter_is_refused(capsys: pytest.CaptureFixture[str], topology: Topology) -> None:
    message = _error(capsys, ["dlq", "replay", "--project", topology.project])
    assert "give a filter (--verdict, --state, --older-than, --region, --event-id) or --all" in message
    message = _error(capsys, ["dlq", "replay", "--project", topology.project, "--state", "resolved"])
    assert "a resolved dead letter is already in the ledger" in message


def test_seed_writes_the_catalog_and_mappings(capsys: pytest.CaptureFixture[str], topology: Topology,
                                              tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"p1": {"points": 7, "kind": "one_time"}}))
    assert cli.main(["seed", "--project", topology.project, "--catalog", str(catalog), "--map", "cus_9=user_9"]) == 0
    assert "seeded 1 products and 1 customer mapping(s)" in capsys.readouterr().out
    db = firestore.Client(project=topology.project)
    assert db.document("products/p1").get().to_dict() == {"points": 7, "kind": "one_time", "active": True}
    assert db.document("paynowCustomers/cus_9").get().to_dict() == {"uid": "user_9"}
    db.close()
    catalog.write_text(json.dumps({"p1": {"points": -1, "kind": "one_time"}}))
    assert "points must be a non-negative integer" in _error(
        capsys, ["seed", "--project", topology.project, "--catalog", str(catalog)])


def test_dlq_list_and_show_on_an_empty_dlq(capsys: pytest.CaptureFixture[str], topology: Topology) -> None:
    assert cli.main(["dlq", "list", "--project", topology.project]) == 0
    assert f"dead letters of {topology.project}: none" in capsys.readouterr().out
    assert cli.main(["dlq", "list", "--project", topology.project, "--state", "open"]) == 0
    assert f"dead letters of {topology.project}: none matches" in capsys.readouterr().out
    assert cli.main(["dlq", "show", "--project", topology.project, "evt_x"]) == 1
    assert f"no dead letter with eventId or id 'evt_x' in project {topology.project}" in capsys.readouterr().out


def test_audit_of_an_empty_project_passes(capsys: pytest.CaptureFixture[str], topology: Topology) -> None:
    assert cli.main(["audit", "--project", topology.project]) == 0
    assert "no drift" in capsys.readouterr().out


def test_seed_defaults_to_the_known_paynow_products_and_can_record_mappings_for_the_audit(
        capsys: pytest.CaptureFixture[str], topology: Topology, tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text('{"kind":"run","runId":"r1","catalog":{},"customers":{}}\n')
    assert cli.main(["seed", "--project", topology.project, "--map", "cus_7=user_7", "--traffic-log", str(log)]) == 0
    assert "seeded 9 products and 1 customer mapping(s)" in capsys.readouterr().out
    db = firestore.Client(project=topology.project)
    products = {doc.id: doc.to_dict() for doc in db.collection("products").stream()}
    db.close()
    # the spec's catalog, written out here rather than read from ops.admin.catalog
    assert {p: (d["points"], d["kind"], d["active"]) for p, d in products.items()} == {
        "459935272365195264": (20, "one_time", True), "458255405240287232": (50, "one_time", True),
        "458255787102310400": (150, "one_time", True), "458256188073574400": (500, "one_time", True),
        "321641745958305792": (50, "one_time", False), "458253675014389760": (50, "subscription", True),
        "458254106331451392": (150, "subscription", True), "458254569336479744": (600, "subscription", True),
        "458255036057649152": (1800, "subscription", True)}
    assert json.loads(log.read_text().splitlines()[-1]) == {"kind": "mapping", "customerId": "cus_7", "uid": "user_7"}

