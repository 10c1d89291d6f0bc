"""Pages whenever money is at risk (issue 22): the cloud-only alert policies (deploy/paging.tf) are
deploy/prometheus/cloud_rules.yml's promtool-tested expressions verbatim; every policy has a severity; the uptime
check probes the public /healthz through the load balancer."""
from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from .terraform import DEPLOY, block, load

CLOUD_RULES = DEPLOY / "prometheus" / "cloud_rules.yml"
PAGING = {"healthz_down": "PaynowHealthzDown", "lb_5xx_share": "PaynowLb5xxShare",
          "pipeline_stalled": "PaynowPipelineStalled", "pipeline_lagging": "PaynowPipelineLagging",
          "reconcile_failing": "PaynowReconcileFailing"}
SEVERITIES = {"page": {"CRITICAL", "ERROR"}, "ticket": {"WARNING", "ERROR"}}


def cloud_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(CLOUD_RULES.read_text())
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"]}


def condition(policy: str) -> dict[str, Any]:
    [cond] = load().resource("google_monitoring_alert_policy", policy)["conditions"]
    [body] = cond["condition_prometheus_query_language"]
    return dict(body)


def seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


@pytest.mark.parametrize("policy", sorted(PAGING))
def test_each_page_is_the_promtool_tested_expression(policy: str) -> None:
    rule = cloud_rules()[PAGING[policy]]
    body = condition(policy)
    assert " ".join(load().render(body["query"]).split()) == " ".join(rule["expr"].split())
    assert body["duration"] == f"{seconds(rule.get('for', '0s'))}s"
    assert body["labels"] == rule["labels"]


def test_the_rules_file_has_exactly_the_paged_alerts() -> None:
    assert set(cloud_rules()) == set(PAGING.values())


def test_every_alert_policy_has_a_severity() -> None:
    policies = load().of_type("google_monitoring_alert_policy")
    assert len(policies) >= 12
    for name, policy in policies.items():
        label = policy.get("user_labels", {}).get("severity")
        assert label in SEVERITIES, f"{name}: user_labels.severity page|ticket"
        assert policy.get("severity") in SEVERITIES[label], f"{name}: severity {policy.get('severity')} for {label}"
        for cond in policy["conditions"]:
            for promql in cond.get("condition_prometheus_query_language", []):
                assert promql.get("labels", {}).get("severity") == label, name


def test_the_uptime_check_probes_healthz_through_the_load_balancer_and_pages() -> None:
    config = load()
    check = config.resource("google_monitoring_uptime_check_config", "healthz")
    http = block(check, "http_check")
    assert http["path"] == "/healthz" and http["use_ssl"] is True and http["validate_ssl"] is True
    assert http["port"] == 443
    resource = block(check, "monitored_resource")
    assert resource["type"] == "uptime_url" and resource["labels"]["host"] == "${var.domain}"  # the LB's name
    assert "/healthz" in re.search(r"public_paths\s*=\s*\[([^\]]*)\]", (DEPLOY / "lb.tf").read_text()).group(1)
    assert "uptime_check_check_passed" in condition("healthz_down")["query"]
    assert config.resource("google_monitoring_alert_policy", "healthz_down")["user_labels"]["severity"] == "page"


def test_pages_read_the_deployed_names() -> None:
    config = load()
    forwarding = config.resource("google_compute_global_forwarding_rule", "ingress")["name"]
    assert f'forwarding_rule_name="{forwarding}"' in condition("lb_5xx_share")["query"]
    assert f'subscription_id="{config.locals["pipeline_subscription_id"]}"' in condition("pipeline_stalled")["query"]
    assert f'job_name="{config.locals["reconcile_job_name"]}"' in condition("reconcile_failing")["query"]
    assert 'job_name=~"paynow-ledger-.*"' in condition("pipeline_lagging")["query"]
    assert 'JOB_NAME="paynow-ledger-${REGION}"' in (DEPLOY.parent / "scripts" / "flex-template.sh").read_text()


def test_the_outage_alert_counts_only_failures_with_night_time_windows() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    expr = rules["PaynowRegionOutage"]["expr"]
    windows = {seconds(w) for w in re.findall(r"\[(\d+[smh])\]", expr)}
    assert windows and min(windows) >= 600, "a window shorter than 10 min goes quiet between night-time retries"
    counted = re.findall(r"paynow_webhook_responses_total(\{[^}]*\})?\[", expr)
    assert counted == ['{status=~"5.."}', '{status=~"2.."}'], counted


@pytest.mark.parametrize("unit_tests", ["rules_test.yml", "cloud_rules_test.yml"])
def test_promtool_proves_the_alerts_in_cloud_check(unit_tests: str) -> None:
    """`make cloud-check` runs tests/cloud only: the promtool proofs of both rules files run here too."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's `prometheus` (scripts/install-system-deps.sh)")
    path = DEPLOY.parent / "tests" / "prometheus" / unit_tests
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
