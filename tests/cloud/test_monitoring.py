"""Cloud Monitoring in deploy/: the five DESIGN §6 metrics, the four alerts at the design's thresholds, a dashboard."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from schemas import codec

from .terraform import DEPLOY, block, load

ROOT = DEPLOY.parent
DESIGN_METRICS = ["webhook_ack_p95_by_region", "worker_processing_p95_by_region", "dlq_depth_by_region",
                  "schema_compatibility_rate", "region_failover_events"]


def alert(name: str) -> tuple[str, dict[str, Any]]:
    """(condition kind, condition body) of an alert policy with exactly one condition."""
    [condition] = load().resource("google_monitoring_alert_policy", name)["conditions"]
    [(kind, [body])] = [(k, v) for k, v in condition.items() if k.startswith("condition_")]
    return kind, body


def promql(name: str) -> str:
    kind, body = alert(name)
    assert kind == "condition_prometheus_query_language"
    return " ".join(load().render(body["query"]).split())


def promql_name(metric: str) -> str:
    """Cloud Monitoring's PromQL name of a log-based metric type logging.googleapis.com/user/<metric>."""
    return "logging_googleapis_com:user_" + metric.replace("/", "_").replace(".", "_")


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "dashboards" / "paynow.json").read_text())


# --- the four alerts: deploy/prometheus/rules.yml's PromQL, series renamed -----------------------------------

RULES = DEPLOY / "prometheus" / "rules.yml"
POLICY = {"region_outage": "PaynowRegionOutage", "eu_ack_latency": "PaynowEuAckLatencySkew",
          "dlq_burst": "PaynowDlqBurst", "schema_drops": "PaynowSchemaDrops",
          # the dead-letter alerts (deploy/dead_letters.tf)
          "dead_letter_unresolved": "PaynowDeadLetterUnresolved",
          "dead_letter_needs_engineer": "PaynowDeadLetterNeedsEngineer"}
SEVERITY = {"dead_letter_unresolved": "ticket", "dead_letter_needs_engineer": "page", "region_outage": "page",
            "eu_ack_latency": "ticket", "dlq_burst": "ticket", "schema_drops": "ticket"}
# The claim "same PromQL": each local series (with any matcher it drops) and its Cloud Monitoring twin.
RENAME = [
    ('paynow_webhook_ack_seconds_bucket{outcome=~"accepted|duplicate",',  # the log metric keeps ACK lines only
     promql_name("paynow/webhook_ack_latency") + "_bucket{"),
    ("paynow_webhook_responses_total", promql_name("paynow/webhook_responses")),
    ("paynow_dlq_total", promql_name("paynow/dead_letters")),
    ("paynow_unresolved_dead_letter_age_seconds", promql_name("paynow/unresolved_dead_letter_age")),
    ("paynow_pipeline_events_total[",
     'pubsub_googleapis_com:subscription_ack_message_count{subscription_id="paynow-events-pipeline"}['),
]
# Local only (see monitoring.tf): the outage alert's readiness operand, from the local LB's health checks.
LOCAL_ONLY = ' or on (region) max by (region) (haproxy_server_status{proxy="ingress",state="UP"}) == 0'


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r.get("alert") or r["record"]: r for group in doc["groups"] for r in group["rules"]}


def cloud(expr: str) -> str:
    for local, there in RENAME:
        expr = expr.replace(local, there)
    return expr


def canonical(expr: str) -> str:
    """Whitespace-insensitive, and without the outer parentheses a split expression leaves behind."""
    expr = " ".join(expr.split()).replace("( ", "(").replace(" )", ")")
    while expr.startswith("(") and expr.endswith(")") and _balanced(expr[1:-1]):
        expr = expr[1:-1]
    return expr


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize("policy", sorted(POLICY))
def test_alert_policy_is_the_rules_file_expression(policy: str) -> None:
    rule = rules()[POLICY[policy]]
    expected = rule["expr"].replace(LOCAL_ONLY, "") if policy == "region_outage" else rule["expr"]
    assert canonical(promql(policy)) == canonical(cloud(expected))
    body = alert(policy)[1]
    assert body["duration"] == f"{seconds(rule.get('for', '0s'))}s"
    assert body["evaluation_interval"] == "60s"
    assert POLICY[policy] in load().resource("google_monitoring_alert_policy", policy)["conditions"][0][
        "display_name"]
    if policy in SEVERITY:  # the same severity label as the rules file's
        assert body["labels"] == {"severity": SEVERITY[policy]} == rule["labels"]


def test_only_the_outage_readiness_operand_is_local_only() -> None:
    assert LOCAL_ONLY in rules()["PaynowRegionOutage"]["expr"]
    for name in POLICY.values():
        local_series = set(re.findall(r"\b(paynow_\w+|haproxy_\w+)", cloud(rules()[name]["expr"])))
        assert local_series <= ({"haproxy_server_status"} if name == "PaynowRegionOutage" else set()), name


def test_renamed_series_exist_in_the_cloud() -> None:
    defined = {promql_name(m["name"]) for m in load().of_type("google_logging_metric").values()}
    for _, there in RENAME:
        name = re.match(r"[\w:]+", there)[0].removesuffix("_bucket")
        assert name in defined or name == "pubsub_googleapis_com:subscription_ack_message_count", name
    responses = load().resource("google_logging_metric", "webhook_responses")
    assert set(responses["label_extractors"]) == {"region", "status"}  # the outage alert reads both


def seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_there_are_exactly_the_four_design_alerts() -> None:
    policies = load().of_type("google_monitoring_alert_policy")
    # + reconciliation's (deploy/reconcile.tf) and the cloud-only pages (deploy/paging.tf, tests/cloud/test_paging.py)
    assert set(policies) == set(POLICY) | {"reconcile_recovered"} | {
        "healthz_down", "lb_5xx_share", "pipeline_stalled", "pipeline_lagging", "reconcile_failing"}
    for name, body in ((name, policies[name]) for name in POLICY):
        assert body["notification_channels"] == "${var.notification_channels}", name
        assert "RUNBOOK.md" in block(body, "documentation")["content"], name
        [condition] = body["conditions"]
        assert "condition_prometheus_query_language" in condition, name


def test_eu_ack_p95_compares_the_secondary_with_the_primary_region() -> None:
    query = promql("eu_ack_latency")
    assert query.index('region="europe-west1"') < query.index(" > 2 * ") < query.index('region="us-central1"')


def test_schema_drop_verdicts_are_the_decoders_own() -> None:
    numerator = promql("schema_drops").split(" / ")[0]
    assert set(re.search(r'verdict=~"([^"]+)"', numerator)[1].split("|")) == {
        codec.MalformedMessage.verdict, codec.UnknownSchema.verdict, codec.IncompatibleVersion.verdict}
    assert 'subscription_id="paynow-events-pipeline"' in promql("schema_drops")


# --- the five metrics and the dashboard --------------------------------------------------------------------

def test_log_based_metrics_label_by_region() -> None:
    metrics = load().of_type("google_logging_metric")
    assert set(metrics) == {"webhook_ack_latency", "webhook_responses", "worker_processing_latency",
                            "dead_letters", "region_failover_events", "reconcile_recovered_events",
                            "unresolved_dead_letter_age"}
    for name, metric in metrics.items():
        assert "region" in metric["label_extractors"], name
        assert {"key": "region"} in block(metric, "metric_descriptor")["labels"], name
    for name in ("webhook_ack_latency", "worker_processing_latency"):
        descriptor = block(metrics[name], "metric_descriptor")
        assert (descriptor["value_type"], descriptor["unit"]) == ("DISTRIBUTION", "ms")


def test_dashboard_shows_the_five_design_metrics_from_defined_series() -> None:
    tiles = dashboard()["mosaicLayout"]["tiles"]
    titles = [t["widget"]["title"] for t in tiles]
    defined = {promql_name(m["name"]) for m in load().of_type("google_logging_metric").values()}
    for design_name in DESIGN_METRICS:
        [tile] = [t for t in tiles if t["widget"]["title"].startswith(design_name)]
        queries = [d["timeSeriesQuery"]["prometheusQuery"] for d in tile["widget"]["xyChart"]["dataSets"]]
        used = {m for q in queries for m in re.findall(r"logging_googleapis_com:user_\w+?(?=_bucket\b|[\[{])", q)}
        assert used and used <= defined, (design_name, used)
    assert len(set(titles)) == len(titles)


def test_dashboard_targets_match_design() -> None:
    tiles = {t["widget"]["title"].split(" ")[0]: t["widget"]["xyChart"] for t in dashboard()["mosaicLayout"]["tiles"]}
    assert tiles["webhook_ack_p95_by_region"]["thresholds"][0]["value"] == 50
    assert tiles["worker_processing_p95_by_region"]["thresholds"][0]["value"] == 250
    assert tiles["dlq_depth_by_region"]["thresholds"][0]["value"] == 10


def test_dashboard_is_the_terraform_managed_one() -> None:
    body = load().resource("google_monitoring_dashboard", "paynow")
    assert body["dashboard_json"] == '${file("${path.module}/dashboards/paynow.json")}'


# --- the log contract the metrics read, checked against the code that writes the lines ---------------------

def test_ingress_writes_the_lines_the_metrics_read() -> None:
    observe = (ROOT / "ingress" / "observe.py").read_text()
    fields = (ROOT / "ingress" / "logging.py").read_text()
    assert '"webhook accepted"' in observe and '"latencyMs"' in observe
    assert '"region"' in fields  # every ingress line carries the region
    assert '"draining"' in (ROOT / "ingress" / "state.py").read_text()


def test_pipeline_writes_the_lines_the_metrics_read() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "pipeline").glob("*.py"))
    assert re.search(r'log\(logging\.\w+, "event committed"', code)
    assert re.search(r'log\(logging\.\w+, "dead-lettered", [^)]*verdict=', code)
    assert re.search(r'log\(logging\.\w+, "unresolved dead letters", verdict=verdict, count=count,\s+'
                     r'oldestAgeSeconds=', code)
    assert 'getLogger("pipeline")' in code  # the logger scripts/flex-template.sh raises to DEBUG
