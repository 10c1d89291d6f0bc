"""Cloud Monitoring in deploy/: the five DESIGN §6 metrics, the four alerts at the design's thresholds, a dashboard."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

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


# --- the four alerts ---------------------------------------------------------------------------------------

def test_there_are_exactly_the_four_design_alerts() -> None:
    assert set(load().of_type("google_monitoring_alert_policy")) == {
        "region_outage", "eu_ack_latency", "dlq_burst", "schema_drops", "reconcile_recovered"}  # + issue K
    for name, body in load().of_type("google_monitoring_alert_policy").items():
        assert body["notification_channels"] == "${var.notification_channels}", name
        assert "RUNBOOK.md" in block(body, "documentation")["content"], name


def test_region_outage_is_no_successful_webhook_for_5_minutes_per_region() -> None:
    kind, body = alert("region_outage")
    assert kind == "condition_absent" and body["duration"] == "300s"
    assert "google_logging_metric.webhooks_accepted.name" in body["filter"]
    assert block(body, "aggregations")["group_by_fields"] == ["metric.label.region"]
    metric = load().resource("google_logging_metric", "webhooks_accepted")
    assert metric["filter"].endswith('jsonPayload.message="webhook accepted"')


def test_eu_ack_p95_above_twice_us_for_15_minutes() -> None:
    query = promql("eu_ack_latency")
    ack = promql_name("paynow/webhook_ack_latency")
    quantile = (r"histogram_quantile\(0\.95, sum by \(le\) \(rate\(" + re.escape(ack) +
                r'_bucket\{region="(?P<r>[a-z0-9-]+)"\}\[5m\]\)\)\)')
    match = re.fullmatch(quantile.replace("?P<r>", "?P<eu>") + r" > 2 \* " + quantile.replace("?P<r>", "?P<us>"),
                         query)
    assert match, query
    assert (match["eu"], match["us"]) == ("europe-west1", "us-central1")
    assert alert("eu_ack_latency")[1]["duration"] == "900s"


def test_dlq_more_than_10_in_5_minutes() -> None:
    kind, body = alert("dlq_burst")
    assert kind == "condition_threshold"
    assert (body["comparison"], body["threshold_value"]) == ("COMPARISON_GT", 10)
    aggregation = block(body, "aggregations")
    assert (aggregation["alignment_period"], aggregation["per_series_aligner"]) == ("300s", "ALIGN_SUM")
    assert aggregation["cross_series_reducer"] == "REDUCE_SUM"  # all regions and verdicts together
    assert "google_logging_metric.dead_letters.name" in body["filter"]


def test_schema_drops_above_a_tenth_of_a_percent_for_10_minutes() -> None:
    query = promql("schema_drops")
    numerator, rest = query.split(" / ")
    denominator, threshold = rest.rsplit(" > ", 1)
    assert float(threshold) == pytest.approx(0.001)
    assert promql_name("paynow/dead_letters") in numerator
    # The schema verdicts are exactly the decode failures' own (schemas/codec.py).
    assert set(re.search(r'verdict=~"([^"]+)"', numerator)[1].split("|")) == {
        codec.MalformedMessage.verdict, codec.UnknownSchema.verdict, codec.IncompatibleVersion.verdict}
    assert 'subscription_id="paynow-events-pipeline"' in denominator
    assert alert("schema_drops")[1]["duration"] == "600s"


# --- the five metrics and the dashboard --------------------------------------------------------------------

def test_log_based_metrics_label_by_region() -> None:
    metrics = load().of_type("google_logging_metric")
    assert set(metrics) == {"webhook_ack_latency", "webhooks_accepted", "worker_processing_latency",
                            "dead_letters", "region_failover_events", "reconcile_recovered_events"}
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
    assert 'getLogger("pipeline")' in code  # the logger scripts/flex-template.sh raises to DEBUG
