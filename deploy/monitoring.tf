# The five DESIGN §6 metrics (log-based, from the JSON log lines both services write) and the four alerts.
#
# The alerts are deploy/prometheus/rules.yml's, in PromQL: each query below is the rules file's expression with
# its series renamed to their Cloud Monitoring names (tests/cloud/test_monitoring.py holds the renaming and
# compares them expression by expression; promtool proves the expressions, tests/prometheus):
#   paynow_webhook_responses_total                             -> logging_googleapis_com:user_paynow_webhook_responses
#   paynow_webhook_ack_seconds_bucket{outcome=~"accepted|duplicate",...}
#                                                              -> logging_googleapis_com:user_paynow_webhook_ack_latency_bucket{...}
#                                                                 (its log filter keeps only ACK lines; ms, not s:
#                                                                 the alert compares two p95s, so units cancel)
#   paynow_dlq_total                                           -> logging_googleapis_com:user_paynow_dead_letters
#   paynow_pipeline_events_total                               -> pubsub_googleapis_com:subscription_ack_message_count
#                                                                 {subscription_id="paynow-events-pipeline"}
# Not carried over: the outage alert's readiness operand (the local LB's /readyz health check, HAProxy's
# haproxy_server_status). Here serverless NEGs have no LB health check and the ingress only accepts traffic from
# the load balancer, so no uptime check can reach one region's /readyz; Cloud Run's readiness probe takes a
# failing region out of the LB (lb.tf) and the remaining operand pages when requests still arrive and fail.
#
# Log contract (deploy/README.md): the ingress logs one JSON line per request on stdout
#   {"message": "webhook accepted"|"webhook refused", "region", "latencyMs", "status", "eventId", ...}
# and {"message": "draining"} when it leaves rotation. The pipeline logs, through the `pipeline` logger
# (shipped at DEBUG with --sdk_harness_log_level_overrides, scripts/flex-template.sh), one line per outcome:
#   {"message": "event committed", "latencyMs" (publish -> commit), ...} and
#   {"message": "dead-lettered", "verdict", ...}
# Dataflow stores a worker's message text in jsonPayload.message, hence REGEXP_EXTRACT there; the worker
# region is the dataflow_step resource's own region label.

locals {
  ingress_log = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${local.ingress_service_name}\"",
  ])
  pipeline_log = join(" AND ", [
    "resource.type=\"dataflow_step\"",
    "resource.labels.job_name=~\"^paynow-ledger-\"",
  ])
  schema_verdicts = ["drop_incompatible", "unknown_schema", "drop_malformed"]
  # PromQL names of the metrics below (Cloud Monitoring's mapping: first "/" -> ":", others and "." -> "_").
  promql_ack_latency  = "logging_googleapis_com:user_paynow_webhook_ack_latency"
  promql_responses    = "logging_googleapis_com:user_paynow_webhook_responses"
  promql_dead_letters = "logging_googleapis_com:user_paynow_dead_letters"
  promql_consumed     = "pubsub_googleapis_com:subscription_ack_message_count"
}

# --- metrics -----------------------------------------------------------------------------------------------

# webhook_ack_p95_by_region
resource "google_logging_metric" "webhook_ack_latency" {
  name            = "paynow/webhook_ack_latency"
  description     = "Ingress time from request to 2xx answer (publish confirmed), by receiving region."
  filter          = "${local.ingress_log} AND jsonPayload.message=\"webhook accepted\""
  value_extractor = "EXTRACT(jsonPayload.latencyMs)"
  label_extractors = {
    region = "EXTRACT(jsonPayload.region)"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "ms"
    labels {
      key = "region"
    }
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.4
      scale              = 0.5
    }
  }
  depends_on = [google_project_service.apis]
}

# The region-outage signal: every webhook answer, by receiving region and HTTP status (requests arriving,
# and whether any succeeded). Local twin: paynow_webhook_responses_total.
resource "google_logging_metric" "webhook_responses" {
  name        = "paynow/webhook_responses"
  description = "Webhook answers, by receiving region and HTTP status."
  filter      = "${local.ingress_log} AND jsonPayload.message=(\"webhook accepted\" OR \"webhook refused\")"
  label_extractors = {
    region = "EXTRACT(jsonPayload.region)"
    status = "EXTRACT(jsonPayload.status)"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key = "region"
    }
    labels {
      key = "status"
    }
  }
  depends_on = [google_project_service.apis]
}

# worker_processing_p95_by_region
resource "google_logging_metric" "worker_processing_latency" {
  name            = "paynow/worker_processing_latency"
  description     = "Pub/Sub publish -> Firestore commit of an event, by worker region."
  filter          = "${local.pipeline_log} AND jsonPayload.message:\"event committed\""
  value_extractor = "REGEXP_EXTRACT(jsonPayload.message, \"\\\"latencyMs\\\": ([0-9.]+)\")"
  label_extractors = {
    region = "EXTRACT(resource.labels.region)"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "ms"
    labels {
      key = "region"
    }
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.4
      scale              = 1
    }
  }
  depends_on = [google_project_service.apis]
}

# dlq_depth_by_region (messages dead-lettered) and, by verdict, the schema compatibility numerator.
resource "google_logging_metric" "dead_letters" {
  name        = "paynow/dead_letters"
  description = "Events sent to the DLQ topic, by worker region and verdict."
  filter      = "${local.pipeline_log} AND jsonPayload.message:\"dead-lettered\""
  label_extractors = {
    region  = "EXTRACT(resource.labels.region)"
    verdict = "REGEXP_EXTRACT(jsonPayload.message, \"\\\"verdict\\\": \\\"([a-z_]+)\\\"\")"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key = "region"
    }
    labels {
      key = "verdict"
    }
  }
  depends_on = [google_project_service.apis]
}

# region_failover_events: a region leaving rotation (drain on SIGTERM or admin request, rollback switch).
resource "google_logging_metric" "region_failover_events" {
  name        = "paynow/region_failover_events"
  description = "Ingress instances that stopped serving (draining), by region."
  filter      = "${local.ingress_log} AND jsonPayload.message=\"draining\""
  label_extractors = {
    region = "EXTRACT(jsonPayload.region)"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key = "region"
    }
  }
  depends_on = [google_project_service.apis]
}

# schema_compatibility_rate = 1 - schema drops / messages the pipeline consumed: a dashboard ratio of
# dead_letters{verdict in schema_verdicts} and the subscription's built-in ack_message_count.

# --- alerts (DESIGN §6 thresholds) -------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "region_outage" {
  display_name          = "paynow: region outage (requests failing 5xx, none succeeding, for 5 min)"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "page"
  }

  conditions {
    display_name = "PaynowRegionOutage: webhooks in a region answered 5xx and none 2xx (15 min windows)"
    condition_prometheus_query_language {
      query               = <<-EOT
        (sum by (region) (increase(${local.promql_responses}{status=~"5.."}[15m])) > 0
          unless on (region) sum by (region) (increase(${local.promql_responses}{status=~"2.."}[15m])) > 0)
      EOT
      duration            = "300s"
      evaluation_interval = "60s"
      labels = {
        severity = "page"
      }
      # A log-based metric has no series until its first matching line, and a new one is not visible to the
      # alerting API for a while: validation would fail the first apply ("Cannot find metric(s)").
      disable_metric_validation = true
    }
  }

  documentation {
    content   = "Webhooks reaching a region fail (5xx) and none succeeds, for 5 minutes; 15-minute windows keep it firing at night-time traffic (a region without traffic, or with only refused requests, is not an outage; what the load balancer answers itself pages as PaynowLb5xxShare / PaynowHealthzDown, paging.tf). RUNBOOK.md#failover."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.webhook_responses]
}

resource "google_monitoring_alert_policy" "eu_ack_latency" {
  display_name          = "paynow: EU ACK p95 > 2x US ACK p95 for 15 min"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "ticket"
  }

  conditions {
    display_name = "PaynowEuAckLatencySkew: ACK p95 ${var.secondary_region} > 2 x ${var.primary_region}"
    condition_prometheus_query_language {
      query               = <<-EOT
        histogram_quantile(0.95, sum by (le) (rate(${local.promql_ack_latency}_bucket{region="${var.secondary_region}"}[5m])))
          > 2 * histogram_quantile(0.95, sum by (le) (rate(${local.promql_ack_latency}_bucket{region="${var.primary_region}"}[5m])))
      EOT
      duration            = "900s"
      evaluation_interval = "60s"
      labels = {
        severity = "ticket"
      }
      # A log-based metric has no series until its first matching line, and a new one is not visible to the
      # alerting API for a while: validation would fail the first apply ("Cannot find metric(s)").
      disable_metric_validation = true
    }
  }

  documentation {
    content   = "Europe acknowledges webhooks more than twice as slowly as the US. RUNBOOK.md#failover (manual force to one region)."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.webhook_ack_latency]
}

resource "google_monitoring_alert_policy" "dlq_burst" {
  display_name          = "paynow: DLQ > 10 in 5 min"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "ticket"
  }

  conditions {
    display_name = "PaynowDlqBurst: dead letters in 5 min > 10"
    condition_prometheus_query_language {
      query               = <<-EOT
        sum(increase(${local.promql_dead_letters}[5m])) > 10
      EOT
      duration            = "0s"
      evaluation_interval = "60s"
      labels = {
        severity = "ticket"
      }
      # A log-based metric has no series until its first matching line, and a new one is not visible to the
      # alerting API for a while: validation would fail the first apply ("Cannot find metric(s)").
      disable_metric_validation = true
    }
  }

  documentation {
    content   = "More than 10 events went to the DLQ within 5 minutes. RUNBOOK.md#dlq-replay-drill: `paynow dlq list`."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.dead_letters]
}

resource "google_monitoring_alert_policy" "schema_drops" {
  display_name          = "paynow: schema drops > 0.1% for 10 min"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "ticket"
  }

  conditions {
    display_name = "PaynowSchemaDrops: schema-verdict dead letters / consumed > 0.001"
    condition_prometheus_query_language {
      query               = <<-EOT
        sum(rate(${local.promql_dead_letters}{verdict=~"${join("|", local.schema_verdicts)}"}[5m]))
          / sum(rate(${local.promql_consumed}{subscription_id="${local.pipeline_subscription_id}"}[5m]))
          > 0.001
      EOT
      duration            = "600s"
      evaluation_interval = "60s"
      labels = {
        severity = "ticket"
      }
      # A log-based metric has no series until its first matching line, and a new one is not visible to the
      # alerting API for a while: validation would fail the first apply ("Cannot find metric(s)").
      disable_metric_validation = true
    }
  }

  documentation {
    content   = "More than 0.1% of envelopes are dropped as incompatible, unknown or malformed. RUNBOOK.md#upgrading-mincompatible-to-3."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.dead_letters]
}

resource "google_monitoring_dashboard" "paynow" {
  dashboard_json = file("${path.module}/dashboards/paynow.json")
  depends_on = [
    google_logging_metric.webhook_ack_latency,
    google_logging_metric.worker_processing_latency,
    google_logging_metric.dead_letters,
    google_logging_metric.region_failover_events,
  ]
}
