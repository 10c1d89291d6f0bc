"""Values the provider schema types only as strings or numbers, checked against the APIs' documented enumerations.

Each list below is copied from the API reference page named in its comment (REST v1 pages, as published for
the Compute, Cloud Run Admin v2, Pub/Sub, Firestore, Cloud Monitoring v3, Logging v2 and IAM APIs). A value
outside the list is refused by the API at `terraform apply`, which `terraform validate` cannot see.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .terraform import load

# https://cloud.google.com/compute/docs/reference/rest/v1/urlMaps  (HttpRetryPolicy.retryConditions[])
RETRY_CONDITIONS = {"5xx", "gateway-error", "connect-failure", "retriable-4xx", "refused-stream", "cancelled",
                    "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
# https://cloud.google.com/compute/docs/reference/rest/v1/backendServices  (loadBalancingScheme)
# https://cloud.google.com/compute/docs/reference/rest/v1/globalForwardingRules  (loadBalancingScheme)
LOAD_BALANCING_SCHEMES = {"EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL", "INTERNAL_MANAGED", "INTERNAL_SELF_MANAGED",
                          "INVALID_LOAD_BALANCING_SCHEME"}
# https://cloud.google.com/compute/docs/reference/rest/v1/backendServices  (protocol)
BACKEND_PROTOCOLS = {"HTTP", "HTTPS", "HTTP2", "TCP", "SSL", "UDP", "GRPC", "UNSPECIFIED", "H2C"}
# https://cloud.google.com/compute/docs/reference/rest/v1/regionNetworkEndpointGroups  (networkEndpointType)
NEG_TYPES = {"GCE_VM_IP", "GCE_VM_IP_PORT", "GCE_VM_IP_PORTMAP", "NON_GCP_PRIVATE_IP_PORT", "INTERNET_IP_PORT",
             "INTERNET_FQDN_PORT", "SERVERLESS", "PRIVATE_SERVICE_CONNECT"}
# https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services  (ingress, launchStage)
RUN_INGRESS = {"INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
               "INGRESS_TRAFFIC_NONE"}
LAUNCH_STAGES = {"UNIMPLEMENTED", "PRELAUNCH", "EARLY_ACCESS", "ALPHA", "BETA", "GA", "DEPRECATED"}
# https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies  (combiner, comparison,
# Aggregation.perSeriesAligner / crossSeriesReducer)
COMBINERS = {"AND", "OR", "AND_WITH_MATCHING_RESOURCE"}
COMPARISONS = {"COMPARISON_GT", "COMPARISON_GE", "COMPARISON_LT", "COMPARISON_LE", "COMPARISON_EQ", "COMPARISON_NE"}
ALIGNERS = {"ALIGN_NONE", "ALIGN_DELTA", "ALIGN_RATE", "ALIGN_INTERPOLATE", "ALIGN_NEXT_OLDER", "ALIGN_MIN",
            "ALIGN_MAX", "ALIGN_MEAN", "ALIGN_COUNT", "ALIGN_SUM", "ALIGN_STDDEV", "ALIGN_COUNT_TRUE",
            "ALIGN_COUNT_FALSE", "ALIGN_FRACTION_TRUE", "ALIGN_PERCENTILE_99", "ALIGN_PERCENTILE_95",
            "ALIGN_PERCENTILE_50", "ALIGN_PERCENTILE_05", "ALIGN_PERCENT_CHANGE"}
REDUCERS = {"REDUCE_NONE", "REDUCE_MEAN", "REDUCE_MIN", "REDUCE_MAX", "REDUCE_SUM", "REDUCE_STDDEV",
            "REDUCE_COUNT", "REDUCE_COUNT_TRUE", "REDUCE_COUNT_FALSE", "REDUCE_FRACTION_TRUE",
            "REDUCE_PERCENTILE_99", "REDUCE_PERCENTILE_95", "REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_05"}
# https://cloud.google.com/logging/docs/reference/v2/rest/v2/projects.metrics  (MetricDescriptor kind and type)
METRIC_KINDS = {"GAUGE", "DELTA", "CUMULATIVE"}
VALUE_TYPES = {"BOOL", "INT64", "DOUBLE", "STRING", "DISTRIBUTION", "MONEY"}
# https://cloud.google.com/firestore/docs/reference/rest/v1/projects.databases  (type, concurrencyMode, ...)
FIRESTORE_TYPES = {"FIRESTORE_NATIVE", "DATASTORE_MODE"}
CONCURRENCY_MODES = {"OPTIMISTIC", "PESSIMISTIC", "OPTIMISTIC_WITH_ENTITY_GROUPS"}
PITR = {"POINT_IN_TIME_RECOVERY_ENABLED", "POINT_IN_TIME_RECOVERY_DISABLED"}
DELETE_PROTECTION = {"DELETE_PROTECTION_ENABLED", "DELETE_PROTECTION_DISABLED"}
# https://cloud.google.com/firestore/docs/reference/rest/v1/projects.databases.backupSchedules  (WeeklyRecurrence.day)
DAYS = {"MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"}
# https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories  (format)
REPOSITORY_FORMATS = {"DOCKER", "MAVEN", "NPM", "APT", "YUM", "PYTHON", "KFP", "GO", "GENERIC"}
# https://cloud.google.com/storage/docs/json_api/v1/buckets  (iamConfiguration.publicAccessPrevention,
# lifecycle.rule[].action.type)
PUBLIC_ACCESS_PREVENTION = {"enforced", "inherited"}
LIFECYCLE_ACTIONS = {"Delete", "SetStorageClass", "AbortIncompleteMultipartUpload"}
# Issue 22 additions below (SSL and security policies, firewall, severity, cleanup policies, uptime resources): written
# from these reference pages as known to the author, NOT re-read from this offline machine; check them on a bump.
# https://cloud.google.com/compute/docs/reference/rest/v1/sslPolicies  (profile, minTlsVersion)
SSL_PROFILES = {"COMPATIBLE", "MODERN", "RESTRICTED", "CUSTOM", "FIPS_202205"}
TLS_VERSIONS = {"TLS_1_0", "TLS_1_1", "TLS_1_2", "TLS_1_3"}
# https://cloud.google.com/compute/docs/reference/rest/v1/securityPolicies  (type, rules[].action,
# rateLimitOptions.enforceOnKey, match.versionedExpr); deny(STATUS) takes 403, 404, 429 or 502
ARMOR_TYPES = {"CLOUD_ARMOR", "CLOUD_ARMOR_EDGE", "CLOUD_ARMOR_NETWORK"}
ARMOR_ACTIONS = {"allow", "deny(403)", "deny(404)", "deny(429)", "deny(502)", "redirect", "rate_based_ban",
                 "throttle"}
ENFORCE_ON_KEYS = {"ALL", "IP", "HTTP_HEADER", "XFF_IP", "HTTP_COOKIE", "HTTP_PATH", "SNI", "REGION_CODE",
                   "TLS_JA3_FINGERPRINT", "TLS_JA4_FINGERPRINT", "USER_IP"}
VERSIONED_EXPRS = {"SRC_IPS_V1"}
# https://cloud.google.com/compute/docs/reference/rest/v1/firewalls  (direction)
DIRECTIONS = {"INGRESS", "EGRESS"}
# https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies  (severity)
SEVERITIES = {"CRITICAL", "ERROR", "WARNING"}
# https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories
# (CleanupPolicy.action, CleanupPolicyCondition.tagState)
CLEANUP_ACTIONS = {"DELETE", "KEEP"}
TAG_STATES = {"TAGGED", "UNTAGGED", "ANY"}
# https://cloud.google.com/monitoring/api/resources  (uptime check monitored resource types)
UPTIME_RESOURCES = {"uptime_url", "gce_instance", "gae_app", "aws_ec2_instance", "aws_elb_load_balancer",
                    "k8s_service", "servicedirectory_service", "cloud_run_revision"}

# (resource type, path of nested blocks and the argument) -> the documented values.
ENUMS: list[tuple[str, str, set[str]]] = [
    ("google_compute_url_map", "path_matcher.path_rule.route_action.retry_policy.retry_conditions", RETRY_CONDITIONS),
    ("google_compute_backend_service", "load_balancing_scheme", LOAD_BALANCING_SCHEMES),
    ("google_compute_global_forwarding_rule", "load_balancing_scheme", LOAD_BALANCING_SCHEMES),
    ("google_compute_backend_service", "protocol", BACKEND_PROTOCOLS),
    ("google_compute_region_network_endpoint_group", "network_endpoint_type", NEG_TYPES),
    ("google_cloud_run_v2_service", "ingress", RUN_INGRESS),
    ("google_cloud_run_v2_service", "launch_stage", LAUNCH_STAGES),
    ("google_monitoring_alert_policy", "combiner", COMBINERS),
    ("google_logging_metric", "metric_descriptor.metric_kind", METRIC_KINDS),
    ("google_logging_metric", "metric_descriptor.value_type", VALUE_TYPES),
    ("google_firestore_database", "type", FIRESTORE_TYPES),
    ("google_firestore_database", "concurrency_mode", CONCURRENCY_MODES),
    ("google_firestore_database", "point_in_time_recovery_enablement", PITR),
    ("google_firestore_database", "delete_protection_state", DELETE_PROTECTION),
    ("google_firestore_backup_schedule", "weekly_recurrence.day", DAYS),
    ("google_artifact_registry_repository", "format", REPOSITORY_FORMATS),
    ("google_storage_bucket", "public_access_prevention", PUBLIC_ACCESS_PREVENTION),
    ("google_storage_bucket", "lifecycle_rule.action.type", LIFECYCLE_ACTIONS),
    ("google_compute_ssl_policy", "profile", SSL_PROFILES),
    ("google_compute_ssl_policy", "min_tls_version", TLS_VERSIONS),
    ("google_compute_security_policy", "type", ARMOR_TYPES),
    ("google_compute_security_policy", "rule.action", ARMOR_ACTIONS),
    ("google_compute_security_policy", "rule.rate_limit_options.exceed_action", ARMOR_ACTIONS),
    ("google_compute_security_policy", "rule.rate_limit_options.enforce_on_key", ENFORCE_ON_KEYS),
    ("google_compute_security_policy", "rule.match.versioned_expr", VERSIONED_EXPRS),
    ("google_compute_firewall", "direction", DIRECTIONS),
    ("google_monitoring_alert_policy", "severity", SEVERITIES),
    ("google_artifact_registry_repository", "cleanup_policies.action", CLEANUP_ACTIONS),
    ("google_artifact_registry_repository", "cleanup_policies.condition.tag_state", TAG_STATES),
    ("google_monitoring_uptime_check_config", "monitored_resource.type", UPTIME_RESOURCES),
]


# Alert conditions change shape with their kind (threshold, absent, PromQL); each path is checked where present,
# and at least one aligner must exist somewhere.
ALERT_ENUMS: list[tuple[str, set[str]]] = [
    ("conditions.condition_threshold.comparison", COMPARISONS),
    ("conditions.condition_threshold.aggregations.per_series_aligner", ALIGNERS),
    ("conditions.condition_threshold.aggregations.cross_series_reducer", REDUCERS),
    ("conditions.condition_absent.aggregations.per_series_aligner", ALIGNERS),
    ("conditions.condition_absent.aggregations.cross_series_reducer", REDUCERS),
]


def values_at(body: Any, path: list[str]) -> Iterator[Any]:
    """Every value at `path` below a block body, through repeated blocks and `dynamic` contents."""
    if isinstance(body, list):
        for item in body:
            yield from values_at(item, path)
        return
    if not isinstance(body, dict):
        return
    head, rest = path[0], path[1:]
    for dynamic in body.get("dynamic", []):
        if head in dynamic:
            yield from values_at(dynamic[head].get("content", []), rest)
    if head in body:
        if rest:
            yield from values_at(body[head], rest)
        elif isinstance(body[head], list):
            yield from body[head]
        else:
            yield body[head]


def literal(value: Any) -> bool:
    return not (isinstance(value, str) and "${" in value)


@pytest.mark.parametrize(("kind", "path", "allowed"), ENUMS, ids=[f"{k}.{p}" for k, p, _ in ENUMS])
def test_enumerated_values_are_documented_ones(kind: str, path: str, allowed: set[str]) -> None:
    resources = load().of_type(kind)
    found = [(name, v) for name, body in resources.items() for v in values_at(body, path.split("."))]
    assert found, f"no {kind}.{path} in deploy/: update this list together with the Terraform"
    for name, value in found:
        if literal(value):
            argument = path.rsplit(".", 1)[-1]
            assert value in allowed, f"{kind}.{name}: {argument} = {value!r} is not one of {sorted(allowed)}"


@pytest.mark.parametrize(("path", "allowed"), ALERT_ENUMS, ids=[p for p, _ in ALERT_ENUMS])
def test_alert_condition_values_are_documented_ones(path: str, allowed: set[str]) -> None:
    for name, body in load().of_type("google_monitoring_alert_policy").items():
        for value in values_at(body, path.split(".")):
            if literal(value):
                assert value in allowed, f"google_monitoring_alert_policy.{name}: {path} = {value!r}"


def test_load_balancer_scheme_agrees_between_backend_and_forwarding_rule() -> None:
    """A global external Application LB: both ends EXTERNAL_MANAGED (the API refuses a mix)."""
    config = load()
    assert config.resource("google_compute_backend_service", "ingress")["load_balancing_scheme"] == \
        config.resource("google_compute_global_forwarding_rule", "ingress")["load_balancing_scheme"] == \
        "EXTERNAL_MANAGED"


def test_the_retry_condition_that_broke_apply_is_refused() -> None:
    """Control: the value deploy/lb.tf used to carry is not in the documented list."""
    assert "reset" not in RETRY_CONDITIONS and "5xx" in RETRY_CONDITIONS


# --- rules the API enforces across arguments ------------------------------------------------------------------

def test_backend_service_with_serverless_negs_has_no_timeout_or_health_checks() -> None:
    """compute/docs/reference/rest/v1/backendServices: timeoutSec and healthChecks are refused for serverless
    NEG backends ("Timeout sec is not supported for a backend service with Serverless network endpoint groups")."""
    config = load()
    negs = {f"google_compute_region_network_endpoint_group.{n}" for n, b in
            config.of_type("google_compute_region_network_endpoint_group").items()
            if b["network_endpoint_type"] == "SERVERLESS"}
    assert negs
    for name, body in config.of_type("google_compute_backend_service").items():
        groups = " ".join(str(g) for g in values_at(body, ["backend", "group"]))
        if any(neg in groups for neg in negs):
            assert "timeout_sec" not in body, f"google_compute_backend_service.{name}: timeout_sec with serverless NEGs"
            assert "health_checks" not in body, name


def test_fault_injection_aborts_are_valid() -> None:
    """urlMaps HttpFaultAbort: httpStatus 200..599, percentage 0.0..100.0."""
    aborts = list(values_at(list(load().of_type("google_compute_url_map").values()),
                            ["path_matcher", "default_route_action", "fault_injection_policy", "abort"]))
    aborts += list(values_at(list(load().of_type("google_compute_url_map").values()),
                             ["default_route_action", "fault_injection_policy", "abort"]))
    assert aborts
    for abort in aborts:
        assert 200 <= abort["http_status"] <= 599 and 0 <= abort["percentage"] <= 100, abort


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    assert match, f"{duration!r} is not a protobuf Duration (e.g. '600s')"
    return float(match.group(1))


def test_retention_durations_are_in_the_documented_ranges() -> None:
    config = load()
    # pubsub/docs/reference/rest/v1/projects.topics: messageRetentionDuration 10 minutes .. 31 days.
    for name, topic in config.of_type("google_pubsub_topic").items():
        assert 600 <= seconds(config.render(topic["message_retention_duration"])) <= 31 * 86400, name
    # projects.subscriptions: messageRetentionDuration 10 minutes .. 7 days; ackDeadlineSeconds 10 .. 600.
    for name, sub in config.of_type("google_pubsub_subscription").items():
        assert 600 <= seconds(config.render(sub["message_retention_duration"])) <= 7 * 86400, name
        assert 10 <= sub["ack_deadline_seconds"] <= 600, name
    # firestore backupSchedules: retention at most 14 weeks; a daily schedule at most 7 days.
    for name, schedule in config.of_type("google_firestore_backup_schedule").items():
        limit = 7 * 86400 if "daily_recurrence" in schedule else 14 * 7 * 86400
        assert 0 < seconds(schedule["retention"]) <= limit, name


def test_the_subscription_dataflow_reads_has_no_pubsub_dead_letter_or_retry_policy() -> None:
    """DESIGN §5: Pub/Sub does not support dead_letter_policy or retry_policy on a subscription Dataflow reads."""
    sub = load().resource("google_pubsub_subscription", "pipeline")
    assert "dead_letter_policy" not in sub and "retry_policy" not in sub
