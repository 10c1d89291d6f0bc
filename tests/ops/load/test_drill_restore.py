"""The `restore` drill in its short setting: RUNBOOK "Restoring the ledger" under traffic on a two-region stack of its
own (real emulators, ingresses, HAProxy, pipelines), plus the emulator export/import it relies on."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import firestore
from rich.console import Console

from ops.admin import audit
from ops.load import drill_restore, drills
from ops.local import backup
from ops.local.stack import Stack
from tests.ops.load.stacks import running_stack

RUNBOOK = Path(__file__).resolve().parents[3] / "RUNBOOK.md"


def test_the_runbook_restore_section_is_the_drills_procedure() -> None:
    text = RUNBOOK.read_text()
    section = text[text.index("## Restoring the ledger\n"):text.index("\n## ", text.index("## Restoring the ledger"))]
    numbered = [int(n) for n in re.findall(r"^(\d+)\. ", section, re.MULTILINE)]
    assert numbered == list(range(1, len(drill_restore.STEPS) + 1))
    for name, command in drill_restore.STEPS:
        assert command in section, (name, command)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_import_merges_so_a_restore_empties_the_database_first(emulator_hosts: tuple[str, str],
                                                                 tmp_path: Path) -> None:
    """The emulator's import keeps documents written after the export (as `gcloud firestore import` does): the
    runbook's restore goes into an empty database, never over the damaged one."""
    project = f"backup-{uuid.uuid4().hex[:8]}"
    db = firestore.Client(project=project)
    try:
        db.document("webhookEvents/before").set({"status": "applied"})
        db.document("users/u/wallet/points").set({"paidBalance": 10})
        export = backup.export_firestore(project, tmp_path / "export")
        db.document("webhookEvents/after").set({"status": "applied"})
        db.document("users/u/wallet/points").set({"paidBalance": 30})
        backup.import_firestore(project, export)
        assert db.document("webhookEvents/after").get().exists  # merged: the later claim survived
        assert db.document("users/u/wallet/points").get().to_dict() == {"paidBalance": 10}
        backup.clear_firestore(project)
        backup.import_firestore(project, export)
        assert {d.id for d in db.collection("webhookEvents").stream()} == {"before"}
        with pytest.raises(backup.BackupError, match="overall_export_metadata"):
            backup.import_firestore(project, tmp_path / "nothing")
    finally:
        db.close()


@pytest.fixture(scope="module")
def stack(emulator_hosts: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack("restore", tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_restore_drill(stack: Stack) -> None:
    console = Console(width=200, record=True)
    (result,) = drills.run_drills(stack, ["restore"], duration=30, rate=15, console=console)
    print(console.export_text())
    assert result.error is None, result.error
    assert result.passed
    value = result.figure

    # the export really was the recovery point: events after it were re-applied, not merged back
    assert value("restored database: claims of events first sent after the export").value.startswith("0 of ")
    assert int(value("events first sent after T (the restore must apply them again)").value) > 0
    assert int(value("webhooks answered 2xx while both pipelines were stopped").value) > 0
    # the seek gave everything back; the reconciler had nothing the push path delivered left to recover
    assert value("7. reconcile --since (T − margin): events the seek had not given back").value == "0"
    # deliveries the restored ledger holds, re-sent by PayNow afterwards, are duplicates, never credits
    resent = value("deliveries applied before T or re-applied after the restore, re-sent by PayNow").value
    assert int(resent.split("/")[0]) >= 20
    assert value("re-sent deliveries: new workers' outcomes").value.endswith("applied 0")
    # judged by the independent model: nothing lost, nothing doubled
    wallets = value(f"audit: {audit.MODEL_WALLETS}").value
    assert wallets.split("/")[0] == wallets.split("/")[1] != "0"
    assert value(f"audit: {audit.KEY_TWICE}").ok and value(f"audit: {audit.LOST}").ok
    assert all(stack.processes[f"pipeline-{r}"].alive() for r in stack.config.regions)
