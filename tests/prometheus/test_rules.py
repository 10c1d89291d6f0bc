"""deploy/prometheus/rules.yml under promtool: valid, unit-tested alert by alert, and what the local stack loads."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.local import prometheus

HERE = Path(__file__).resolve().parent
UNIT_TESTS = HERE / "rules_test.yml"
DESIGN_METRICS = {"webhook_ack_p95_by_region", "worker_processing_p95_by_region", "dlq_depth_by_region",
                  "schema_compatibility_rate", "region_failover_events"}
DESIGN_ALERTS = {"PaynowRegionOutage": "5m", "PaynowEuAckLatencySkew": "15m", "PaynowDlqBurst": None,
                 "PaynowSchemaDrops": "10m", "PaynowDeadLetterUnresolved": None, "PaynowDeadLetterNeedsEngineer": None}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:  # a missing promtool must not pass as "alerts untested"
        pytest.fail("promtool not found: install Debian's `prometheus` (scripts/install-system-deps.sh)")
    return subprocess.run([path, *args], capture_output=True, text=True, check=False, timeout=60)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(prometheus.RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(prometheus.RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


CLOUD_RULES = prometheus.RULES.with_name("cloud_rules.yml")  # Cloud Monitoring series only (deploy/paging.tf)
CLOUD_UNIT_TESTS = HERE / "cloud_rules_test.yml"


def test_promtool_checks_and_tests_the_cloud_only_rules() -> None:
    result = promtool("check", "rules", str(CLOUD_RULES))
    assert result.returncode == 0 and "SUCCESS: 5 rules found" in result.stdout, result.stdout + result.stderr
    result = promtool("test", "rules", str(CLOUD_UNIT_TESTS))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_every_cloud_alert_fires_and_stays_silent_in_some_history_with_sparse_traffic() -> None:
    doc = yaml.safe_load(CLOUD_UNIT_TESTS.read_text())
    assert doc["rule_files"] == ["../../deploy/prometheus/cloud_rules.yml"]
    alerts = {r["alert"] for g in yaml.safe_load(CLOUD_RULES.read_text())["groups"] for r in g["rules"]}
    fires = {c["alertname"] for t in doc["tests"] for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    silent = {c["alertname"] for t in doc["tests"] for c in t.get("alert_rule_test", []) if not c["exp_alerts"]}
    assert fires == silent == alerts
    assert any("night" in t["name"] for t in doc["tests"])


def test_the_outage_alert_is_proven_on_sparse_failures_and_on_a_scanner() -> None:
    names = [t["name"] for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]]
    assert any("night-time" in n and "fires" in n for n in names)
    assert any("scanner" in n and "silent" in n for n in names)


def test_the_file_defines_exactly_the_five_metrics_and_four_alerts_at_the_design_durations() -> None:
    assert {r["record"] for r in rules() if "record" in r} == DESIGN_METRICS
    assert {r["alert"]: r.get("for") for r in rules() if "alert" in r} == DESIGN_ALERTS


def test_alert_expressions_use_raw_series_only() -> None:
    """Cloud Monitoring cannot evaluate recording rules, and the alert policies carry the same PromQL."""
    for rule in rules():
        if "alert" in rule:
            assert not any(name in rule["expr"] for name in DESIGN_METRICS), rule["alert"]


def test_every_alert_has_a_history_that_fires_it_and_one_that_does_not_and_every_metric_a_value() -> None:
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    assert doc["rule_files"] == ["../../deploy/prometheus/rules.yml"]
    fires: set[str] = set()
    silent: set[str] = set()
    checked: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
        checked.update(check["expr"] for check in case.get("promql_expr_test", []))
    assert fires == silent == set(DESIGN_ALERTS)
    assert {m for m in DESIGN_METRICS if any(expr.startswith(m) for expr in checked)} == DESIGN_METRICS
    # the outage and skew alerts are proven silent when EU simply has no traffic
    silent_eu = [c["name"] for c in doc["tests"] if "no traffic" in c["name"] or "silent" in c["name"]]
    assert any("outage" in n for n in silent_eu) and any("skew" in n for n in silent_eu), silent_eu


def test_the_local_stack_loads_the_same_expressions_with_shorter_waits(tmp_path: Path) -> None:
    local = prometheus.local_rules()
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(local))
    result = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    production = {r.get("alert") or r["record"]: r for r in rules()}
    for group in local["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            assert rule["expr"] == production[name]["expr"], name
            if "for" in rule:
                assert prometheus.seconds(rule["for"]) == prometheus.seconds(production[name]["for"]) // 60


def test_config_scrapes_both_regions_of_each_service_and_haproxy(tmp_path: Path) -> None:
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(yaml.safe_dump(prometheus.local_rules()))
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus.render_config(
        ingress={"us-central1": "http://127.0.0.1:1001/metrics", "europe-west1": "http://127.0.0.1:1002/metrics"},
        pipelines={"us-central1": "http://127.0.0.1:1003/metrics", "europe-west1": "http://127.0.0.1:1004/metrics"},
        haproxy="http://127.0.0.1:1005/metrics", rules=rules_path))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert set(jobs) == {"ingress", "pipeline", "haproxy"}
    for name in ("ingress", "pipeline"):
        targets = {c["labels"]["region"]: c["targets"] for c in jobs[name]["static_configs"]}
        assert set(targets) == {"us-central1", "europe-west1"}
    [relabel] = jobs["haproxy"]["metric_relabel_configs"]
    assert relabel["target_label"] == "region" and relabel["regex"].startswith("ingress;")
