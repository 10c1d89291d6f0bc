"""The `restore` drill (seed Phase 7B, issue 22 item 7): RUNBOOK "Restoring the ledger", step for step, under traffic.

While PayNow's traffic flows: back up (a Pub/Sub snapshot of the pipeline's subscription, then the Firestore
emulator's own export: the recovery point), damage the ledger the way a bad release would, then restore as the
runbook says: pause the reconciler, stop both pipelines, import the export into a copy and audit it, empty the
database and import the export in its place, seek the subscription back, start new pipelines, let the traffic run
on, reconcile with PayNow's history over a window that starts before the recovery point, and re-send to the
ingress deliveries the restored ledger had already applied. It ends with the audit and the independent model:
every accepted event applied exactly once.

Why each step (what breaks without it; ops/local/backup.py has what the emulators support):
- the database is emptied before the import: an import merges, so the documents of events after the recovery
  point would stay (their webhookEvents claims and ledger entries) while wallets went back: never re-applied;
- the pipelines are stopped and new ones started: a running worker's dedupe memory (an hour) holds eventIds the
  restored database no longer has, and drops the seek's and the reconciler's copies of them as duplicates;
- the snapshot is taken before the export: a message acknowledged before the snapshot was committed before it,
  so it is in the export; everything else is delivered again (what was committed already is a duplicate);
- the reconciler runs with a window that starts before the recovery point: it republishes whatever PayNow holds
  that the restored ledger lacks (deliveries PayNow gave up on, anything the seek could not give back).
"""
from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from google.cloud import firestore

from ops.admin import audit
from ops.admin import reconcile as rc
from ops.admin.dlq import PubSubPublish
from ops.admin.paynow_api import ManagementApi
from ops.load import traffic, traffic_log
from ops.local import backup, status
from ops.local.stack import PRIMARY
from schemas import deliveries
from schemas.signing import signed_headers

RECONCILE_MARGIN_S = 60.0
"""The reconciler's window starts this long before the recovery point (RUNBOOK: 15 min, > the jobs' lag)."""
REDELIVER = 40
"""Deliveries applied before the recovery point (and as many after) that PayNow re-sends after the restore."""
SETTLE_S = 60.0
"""How long the recovered events may take to commit (measured: 2-3 s on a busy 2-core machine); the pipelines were
stopped cleanly and the seek redelivers at once, so no killed worker's 60 s lease needs to expire first."""
STEPS = (
    ("1. pause the reconciler (none scheduled locally)",
     "gcloud scheduler jobs pause paynow-reconcile --location=$PRIMARY"),
    ("2. stop writing: both pipelines stopped (the ingresses keep accepting)", "gcloud dataflow jobs drain"),
    ("3. import the export into a copy (a scratch project)",
     'gcloud firestore import "gs://$PROJECT-dataflow/firestore-pitr/$T" --database=ledger-restore'),
    ("4. audit the copy", 'paynow audit --project "$PROJECT" --database ledger-restore'),
    ("5. empty the database, import the export in its place",
     "gcloud firestore databases delete --database='(default)'"),
    ("6. seek the subscription back to T, start new pipelines",
     'gcloud pubsub subscriptions seek paynow-events-pipeline --time="$SEEK"'),
    ("7. reconcile with PayNow over a window from before T", "paynow reconcile --since"),
    ("8. resume the reconciler", "gcloud scheduler jobs resume paynow-reconcile --location=$PRIMARY"),
)
"""RUNBOOK "Restoring the ledger", numbered as there: the drill's name for each step and the production command it
stands for (tests/ops/load/test_drill_restore.py checks the runbook holds each command and numbers 8 steps)."""
DAMAGED_WALLETS = 3
DAMAGE_POINTS = 1000


def _events_present(db: Any, event_ids: list[str]) -> set[str]:
    present: set[str] = set()
    for i in range(0, len(event_ids), 300):
        refs = [db.collection("webhookEvents").document(e) for e in event_ids[i:i + 300]]
        present |= {s.id for s in db.get_all(refs) if s.exists}
    return present


def _accepted(records: list[dict[str, Any]], *, after_ms: int = 0, before_ms: int | None = None) -> list[str]:
    """Event ids answered 2xx whose first delivery (PayNow's first sending of that eventId) was sent in
    [after_ms, before_ms): an exact duplicate of an earlier delivery belongs to the earlier one's time."""
    first: dict[str, int] = {}
    accepted: set[str] = set()
    for r in records:
        if r.get("kind") == "webhook":
            first[r["eventId"]] = min(first.get(r["eventId"], r["sentAt"]), r["sentAt"])
            if r.get("ok"):
                accepted.add(r["eventId"])
    return sorted(e for e in accepted if first[e] >= after_ms and (before_ms is None or first[e] < before_ms))


def _region(response: httpx.Response) -> str | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer.get("region") if isinstance(answer, dict) else None


def _outcomes(drills: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for samples in drills._worker_samples().values():
        if samples is not None:
            for outcome, n in status.by_label(samples, status.EVENTS, "outcome").items():
                out[outcome] = out.get(outcome, 0.0) + n
    return out


class Procedure:
    """The runbook's steps on the local stack; each step is timed and listed with its production command."""

    def __init__(self, drills: Any, result: Any) -> None:
        self.drills = drills
        self.result = result
        self.stack = drills.stack
        self.project = drills.stack.config.project
        self.subscription = drills.stack.info["subscription"]
        self.marks: dict[str, float] = {}
        self.steps: list[tuple[str, str, float, tuple[str, str, str, bool] | None]] = []
        self.snapshot = ""
        self.export: Path | None = None
        self.pipelines = [n for n in self.stack.processes if n.startswith("pipeline-")]

    def step(self, name: str, production: str, started: float,
             check: tuple[str, str, str, bool] | None = None) -> None:
        """A step done: its name, the production command it stands for, and what it checked (figure, value,
        target, ok)."""
        self.steps.append((name, production, time.time() - started, check))
        self.drills._say(f"restore: {name} ({time.time() - started:.1f} s)")

    # -- before the incident -------------------------------------------------------------------------------
    def take_backup(self) -> None:
        started = time.time()
        self.marks["snapshot"] = started
        self.snapshot = backup.create_snapshot(self.subscription, f"restore-drill-{uuid.uuid4().hex[:8]}")
        directory = self.stack.home / "backups" / time.strftime("%Y%m%dT%H%M%S")
        self.export = backup.export_firestore(self.project, directory)
        self.marks["exported"] = time.time()
        self.step("backup: Pub/Sub snapshot, then Firestore export (the recovery point T)",
                  "scheduled backups / point-in-time recovery; the topic keeps a week of messages", started)

    def damage(self) -> bool:
        """A bad release: points added to a few wallets without a ledger entry, some webhookEvents deleted. True if
        the audit sees it."""
        db = self.drills.db
        wallets = [d for d in db.collection_group("wallet").limit(DAMAGED_WALLETS).stream()]
        for snap in wallets:
            snap.reference.update({"paidBalance": firestore.Increment(DAMAGE_POINTS)})
        for snap in db.collection("webhookEvents").limit(3).stream():
            snap.reference.delete()
        self.marks["damaged"] = time.time()
        return not audit.run(db).get(audit.WALLETS).ok

    # -- RUNBOOK "Restoring the ledger" ----------------------------------------------------------------------
    def restore(self) -> None:
        assert self.export is not None
        started = time.time()
        # 1. the local stack has no reconcile schedule: reconcile runs only in step 7, by hand
        self.step(*STEPS[0], started)
        started = time.time()
        for name in self.pipelines:
            self.stack.processes[name].signal(15)
        for name in self.pipelines:
            self.stack.processes[name].stop()
        self.marks["stopped"] = time.time()
        self.step(*STEPS[1], started)
        started = time.time()
        copy_project = f"{self.project[:20]}-restore-{uuid.uuid4().hex[:4]}"
        backup.import_firestore(copy_project, self.export)
        self.step(*STEPS[2], started)
        started = time.time()
        copy = firestore.Client(project=copy_project)
        try:
            checked = audit.run(copy)
        finally:
            copy.close()
        backup.clear_firestore(copy_project)
        failing = sorted(checked.failing())
        self.step(*STEPS[3], started,
                  ("the copy's audit", "clean" if checked.ok else f"DRIFT: {', '.join(failing)}", "clean",
                   checked.ok))
        started = time.time()
        backup.clear_firestore(self.project)
        backup.import_firestore(self.project, self.export)
        self.marks["restored"] = time.time()
        log = self.drills.last_log
        assert log is not None
        after_export = _accepted(traffic_log.read_log(log, compact=True), after_ms=int(self.marks["exported"] * 1000))
        held = _events_present(self.drills.db, after_export)
        self.step(*STEPS[4], started,
                  ("restored database: claims of events first sent after the export", f"{len(held)} of "
                   f"{len(after_export)}", "0 (the import replaced the database, no merge)", not held))
        started = time.time()
        backup.seek_to_snapshot(self.subscription, self.snapshot)
        for name in self.pipelines:
            self.stack.restart(name, wait=False)
        for name in self.pipelines:
            self.stack.wait_pipeline_ready(name.removeprefix("pipeline-"))
        self.marks["running"] = time.time()
        self.step(*STEPS[5], started)

    def reconcile(self, since_ms: int) -> rc.Report:
        info = self.stack.info["paynowApi"]
        api = ManagementApi(info["apiKey"], base_url=info["url"])
        try:
            return rc.reconcile(api, rc.FirestoreLedger(self.drills.db), store_id=info["storeId"], since_ms=since_ms,
                                publish=PubSubPublish(self.stack.info["topic"]), region=PRIMARY, min_age_s=0)
        finally:
            api.close()

    def redeliver(self, records: list[dict[str, Any]], log: Path) -> tuple[int, int]:
        """PayNow re-sends deliveries the restored ledger applied (before T) and the seek re-applied (after T), each
        signed as PayNow would; recorded in the run's log. (sent, answered 2xx)."""
        restored_ms = int(self.marks["restored"] * 1000)
        chosen: list[dict[str, Any]] = []
        for window in ((0, int(self.marks["snapshot"] * 1000)), (restored_ms, None)):
            ids = set(_accepted(records, after_ms=window[0], before_ms=window[1]))
            picked = [r for r in records if r.get("kind") == "webhook" and r.get("ok") and r["eventId"] in ids
                      and r.get("scenario") in ("order", "mapped_order", "sub_renew", "refund")]
            seen: set[str] = set()
            for r in picked:
                if r["eventId"] not in seen and len(seen) < REDELIVER:
                    seen.add(r["eventId"])
                    chosen.append(r)
        ok = 0
        recorder = traffic_log.Recorder(log)
        try:
            with httpx.Client(timeout=10) as client:
                for r in chosen:
                    delivery = traffic_log.delivery_of(r) or {}
                    body = deliveries.encode(delivery)
                    response = client.post(self.stack.info["target"] + traffic.WEBHOOK_PATH, content=body,
                                           headers=signed_headers(self.stack.secret, body))
                    accepted = 200 <= response.status_code < 300
                    ok += accepted
                    now = int(time.time() * 1000)
                    region = _region(response)
                    recorder.write({**r, "scenario": "redelivered_after_restore", "delivery": delivery,
                                    "sentAt": now, "status": response.status_code, "ok": accepted, "region": region,
                                    "attempts": [{"status": response.status_code, "at": now, "region": region}]})
        finally:
            recorder.close()
        return len(chosen), ok

    def cleanup(self) -> None:
        """Delete the snapshot and the export (it holds uids and customer ids; the drill is its only user) and bring
        back any pipeline a failed step left stopped."""
        if self.snapshot:
            backup.delete_snapshot(self.snapshot)
        if self.export is not None:
            shutil.rmtree(self.export.parent.parent, ignore_errors=True)  # backups/<time>/firestore_export_*/
        for name in self.pipelines:
            if not self.stack.processes[name].alive():
                self.stack.restart(name)


def drill_restore(drills: Any, result: Any, *, duration: float, rate: float) -> None:
    proc = Procedure(drills, result)
    damage_seen: dict[str, bool] = {}
    accepted_while_stopped: dict[str, int] = {}

    async def incident(started: float) -> None:
        await asyncio.sleep(duration * 0.2)
        await asyncio.to_thread(proc.take_backup)
        await asyncio.sleep(max(0.0, started + duration * 0.35 - time.monotonic()))
        damage_seen["audit"] = await asyncio.to_thread(proc.damage)
        await asyncio.to_thread(proc.restore)

    since_ms = int((time.time() - RECONCILE_MARGIN_S) * 1000)
    try:
        stats, records = drills.send("restore", rate=rate, duration=duration, during=incident)
        log = drills.last_log
        result.add("webhooks sent", stats.sent)
        result.add("failed webhooks (no 2xx after PayNow's retries)", stats.failed, "0", stats.failed == 0)
        marks = proc.marks
        t0 = min((r["sentAt"] for r in records if r.get("kind") == "webhook"), default=0) / 1000
        result.add("recovery point T (snapshot, then export)", f"{marks['snapshot'] - t0:.1f} s into the traffic, "
                   f"export took {marks['exported'] - marks['snapshot']:.1f} s")
        result.add("damage after T (wallets +1000, webhookEvents deleted) seen by the audit",
                   "yes" if damage_seen.get("audit") else "no", "yes", damage_seen.get("audit", False))
        for name, production, seconds, check in proc.steps:
            result.add(f"step {name}", f"{seconds:.1f} s", production)
            if check is not None:
                result.add(*check)
        while_stopped = _accepted(records, after_ms=int(marks["stopped"] * 1000),
                                  before_ms=int(marks["running"] * 1000))
        accepted_while_stopped["n"] = len(while_stopped)
        result.add("webhooks answered 2xx while both pipelines were stopped", len(while_stopped), "> 0",
                   len(while_stopped) > 0)
        result.add("pipelines stopped → new pipelines running", f"{marks['running'] - marks['stopped']:.1f} s")
        after_t = _accepted(records, after_ms=int(marks["snapshot"] * 1000))
        result.add("events first sent after T (the restore must apply them again)", len(set(after_t)))
        missing, waited = drills.settle(records, SETTLE_S)
        result.add("accepted events processed after the seek", f"{missing} missing after {waited:.1f} s")

        reconciling = time.monotonic()
        report = proc.reconcile(since_ms)
        drills.console.print(report.table("Reconciliation with PayNow after the restore (step 7)"))
        delivered = {r["eventId"] for r in records if r.get("kind") == "webhook" and r.get("ok")}
        recovered = {r.delivery.event_id for r in report.recovered}
        result.add("7. reconcile --since (T − margin): events the seek had not given back", len(recovered & delivered),
                   "0 (the snapshot precedes the export)", not (recovered & delivered))
        result.add("7. reconcile: deliveries PayNow gave up on, recovered", len(recovered - delivered))
        result.add("7. reconcile: publish failures", len(report.failed), "0", not report.failed)
        gave_up = sorted(recovered - delivered)
        if gave_up:
            traffic_log.append_log(log, {"kind": "recovered", "eventIds": gave_up})
        records = traffic_log.read_log(log, compact=True)
        missing, waited = drills.settle(records, SETTLE_S)
        again = proc.reconcile(since_ms)
        reconciled = time.monotonic() - reconciling
        result.add("7. reconcile again: missing from the ledger", again.count(rc.MISSING) + len(again.recovered), "0",
                   again.count(rc.MISSING) + len(again.recovered) == 0)
        result.add(f"step {STEPS[6][0]}", f"{reconciled:.1f} s", STEPS[6][1])
        result.add(f"step {STEPS[7][0]}", "-", STEPS[7][1])

        before = _outcomes(drills)
        sent, ok = proc.redeliver(records, log)
        result.add("deliveries applied before T or re-applied after the restore, re-sent by PayNow",
                   f"{ok}/{sent} answered 2xx", "all", sent > 0 and ok == sent)
        deadline = time.monotonic() + 30
        seen = 0.0
        while time.monotonic() < deadline:
            after = _outcomes(drills)
            seen = sum(after.get(k, 0.0) - before.get(k, 0.0) for k in ("duplicate", "applied"))
            if seen >= ok:
                break
            time.sleep(0.5)
        after = _outcomes(drills)
        result.add("re-sent deliveries: new workers' outcomes",
                   f"duplicate {after.get('duplicate', 0) - before.get('duplicate', 0):.0f}, "
                   f"applied {after.get('applied', 0) - before.get('applied', 0):.0f}",
                   "all duplicate", after.get("applied", 0) - before.get("applied", 0) == 0 and seen >= ok)

        records = traffic_log.read_log(log, compact=True)
        missing, waited = drills.settle(records, SETTLE_S)
        result.add("accepted events processed (webhookEvents or DLQ)", f"{missing} missing after {waited:.1f} s",
                   "0 missing", missing == 0)
        final = drills.audit_records(records)
        from ops.load.drills import JUDGED

        for name in JUDGED:
            check = final.get(name)
            result.add(f"audit: {name}", check.value, check.detail, check.ok)
    finally:
        proc.cleanup()

