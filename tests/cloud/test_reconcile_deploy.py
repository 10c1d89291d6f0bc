"""deploy/reconcile.tf: the reconciler as a scheduled Cloud Run job, its key from Secret Manager, metric and alert."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from ops.admin import reconcile as rc

from .terraform import DEPLOY, block, load

ROOT = DEPLOY.parent


def job_container() -> dict:
    job = load().resource("google_cloud_run_v2_job", "reconcile")
    return block(block(block(job, "template"), "template"), "containers")


def test_the_job_runs_the_reconciler_image_with_arguments_the_code_accepts() -> None:
    config = load()
    c = job_container()
    assert c["image"] == "${var.reconcile_image}"
    args = [config.render(a) for a in c["args"]]
    args = [a.replace("${tostring(var.reconcile_min_age_seconds)}", str(config.default("reconcile_min_age_seconds")))
            for a in args]
    parser = argparse.ArgumentParser()
    rc.add_arguments(parser)
    parsed = parser.parse_args(args)
    assert parsed.json_log and not parsed.dry_run and parsed.since == 48 * 3600 and parsed.min_age == 1800
    dockerfile = (DEPLOY / "reconcile.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "ops.admin.reconcile"]' in dockerfile
    assert "COPY ops ops" in dockerfile and "COPY schemas schemas" in dockerfile


def test_the_api_key_comes_from_secret_manager_and_every_setting_is_one_the_code_reads() -> None:
    env = {e["name"]: e for e in job_container()["env"]}
    ref = block(block(env["PAYNOW_API_KEY"], "value_source"), "secret_key_ref")
    assert ref["secret"] == "${google_secret_manager_secret.paynow_api_key.secret_id}"
    assert "value" not in env["PAYNOW_API_KEY"]
    source = "".join((ROOT / "ops" / "admin" / f).read_text() for f in ("reconcile.py", "paynow_api.py"))
    for name in env:
        if name != "GOOGLE_CLOUD_PROJECT":  # read by the Google client libraries
            assert f'"{name}"' in source, f"{name} is not read by the reconciler"


def test_scheduler_runs_the_job_as_its_own_account() -> None:
    config = load()
    scheduler = config.resource("google_cloud_scheduler_job", "reconcile")
    target = block(scheduler, "http_target")
    assert target["uri"].endswith("/jobs/${google_cloud_run_v2_job.reconcile.name}:run")
    assert block(target, "oauth_token")["service_account_email"] == "${google_service_account.reconcile.email}"
    invoker = config.resource("google_cloud_run_v2_job_iam_member", "reconcile_invoker")
    assert invoker["role"] == "roles/run.invoker"
    job = config.resource("google_cloud_run_v2_job", "reconcile")
    assert block(block(job, "template"), "template")["service_account"] == "${google_service_account.reconcile.email}"


def test_the_metric_counts_the_line_the_reconciler_writes_per_recovery(capsys: pytest.CaptureFixture[str]) -> None:
    config = load()
    metric = config.resource("google_logging_metric", "reconcile_recovered_events")
    assert metric["name"] == "paynow/reconcile_recovered_events"
    assert config.render(metric["filter"]).endswith(f'jsonPayload.message="{rc.RECOVERED_LOG}"')
    assert metric["filter"].startswith("${local.reconcile_log} AND ")
    assert "resource.labels.job_name" in config.locals["reconcile_log"]
    assert "${local.reconcile_job_name}" in config.locals["reconcile_log"]
    assert config.resource("google_cloud_run_v2_job", "reconcile")["name"] == "${local.reconcile_job_name}"
    rc._log("WARNING", rc.RECOVERED_LOG, region="us-central1", eventType="ON_ORDER_COMPLETED", eventId="1")
    line = json.loads(capsys.readouterr().out)
    for extractor in metric["label_extractors"].values():
        field = re.fullmatch(r"EXTRACT\(jsonPayload\.(\w+)\)", extractor)
        assert field and field.group(1) in line, extractor
    source = (ROOT / "ops" / "admin" / "reconcile.py").read_text()
    assert re.search(r"RECOVERED_LOG, region=args\.region, eventId=d\.event_id, eventType=d\.event_type", source)


def test_any_recovery_raises_the_alert() -> None:
    config = load()
    policy = config.resource("google_monitoring_alert_policy", "reconcile_recovered")
    [condition] = policy["conditions"]
    [promql] = condition["condition_prometheus_query_language"]
    metric = config.resource("google_logging_metric", "reconcile_recovered_events")["name"]
    series = "logging_googleapis_com:user_" + metric.replace("/", "_")
    assert promql["query"] == f"sum(increase({series}[5m])) > 0" and promql["duration"] == "0s"
    assert "RUNBOOK.md#reconciliation" in block(policy, "documentation")["content"]
