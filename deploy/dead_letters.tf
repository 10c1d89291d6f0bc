# Durable dead letters (DESIGN §3): deadLetters/{eventId} in Firestore is the record of every dead-lettered payment
# until its event is committed; the DLQ topic's Pub/Sub copy (pubsub.tf) expires after 7 days.
#
# The pipeline's scanner (pipeline/dead_letters.py) queries it once a minute, per verdict: the oldest unresolved
# letter and a count (the two composite indexes below), and every fifth minute the oldest 300 unresolved letters to
# resolve those whose event was committed another way. It logs one line per verdict with unresolved letters
#   {"message": "unresolved dead letters", "verdict", "count", "oldestAgeSeconds", ...}
# which the log-based metric below turns into a distribution: its _sum/_count over a window is the mean reported
# age of the oldest letter, the same PromQL as deploy/prometheus/rules.yml's paynow_unresolved_dead_letter_age_seconds
# summary (tests/cloud/test_monitoring.py compares them).

resource "google_firestore_index" "dead_letters_by_verdict" {
  database   = google_firestore_database.ledger.name
  collection = "deadLetters"

  fields {
    field_path = "verdict"
    order      = "ASCENDING"
  }
  fields {
    field_path = "state"
    order      = "ASCENDING"
  }
  fields {
    field_path = "firstFailedAt"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "dead_letters_unresolved" {
  database   = google_firestore_database.ledger.name
  collection = "deadLetters"

  fields {
    field_path = "state"
    order      = "ASCENDING"
  }
  fields {
    field_path = "firstFailedAt"
    order      = "ASCENDING"
  }
}

resource "google_logging_metric" "unresolved_dead_letter_age" {
  name            = "paynow/unresolved_dead_letter_age"
  description     = "Age in seconds of the oldest unresolved dead letter, by verdict, at each scan of the pipeline."
  filter          = "${local.pipeline_log} AND jsonPayload.message:\"unresolved dead letters\""
  value_extractor = "REGEXP_EXTRACT(jsonPayload.message, \"\\\"oldestAgeSeconds\\\": ([0-9.]+)\")"
  label_extractors = {
    region  = "EXTRACT(resource.labels.region)"
    verdict = "REGEXP_EXTRACT(jsonPayload.message, \"\\\"verdict\\\": \\\"([a-z_]+)\\\"\")"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
    labels {
      key = "region"
    }
    labels {
      key = "verdict"
    }
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 30
      growth_factor      = 2
      scale              = 60
    }
  }
  depends_on = [google_project_service.apis]
}

locals {
  promql_unresolved_age = "logging_googleapis_com:user_paynow_unresolved_dead_letter_age"
}

resource "google_monitoring_alert_policy" "dead_letter_unresolved" {
  display_name          = "paynow: a dead letter unresolved for more than a day"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "ticket"
  }

  conditions {
    display_name = "PaynowDeadLetterUnresolved: oldest unresolved dead letter > 1 day"
    condition_prometheus_query_language {
      query               = <<-EOT
        max by (verdict) (rate(${local.promql_unresolved_age}_sum[10m]) / rate(${local.promql_unresolved_age}_count[10m])) > 86400
      EOT
      duration            = "0s"
      evaluation_interval = "60s"
      # A log-based metric has no series until its first matching line, and a new one is not visible to the
      # alerting API for a while: validation would fail the first apply ("Cannot find metric(s)").
      disable_metric_validation = true
      labels = {
        severity = "ticket"
      }
    }
  }

  documentation {
    content   = "A payment has been dead-lettered for more than a day (an unmapped customer or product). RUNBOOK.md#dead-letters: `paynow dlq list --state open`."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis, google_logging_metric.unresolved_dead_letter_age]
}

resource "google_monitoring_alert_policy" "dead_letter_needs_engineer" {
  display_name          = "paynow: unresolved write_failed or wedged_key dead letters (page)"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "page"
  }

  conditions {
    display_name = "PaynowDeadLetterNeedsEngineer: unresolved write_failed or wedged_key dead letters"
    condition_prometheus_query_language {
      query                     = <<-EOT
        sum by (verdict) (rate(${local.promql_unresolved_age}_count{verdict=~"write_failed|wedged_key"}[10m])) > 0
      EOT
      duration                  = "0s"
      evaluation_interval       = "60s"
      disable_metric_validation = true # as above: the metric may not be visible to the alerting API yet
      labels = {
        severity = "page"
      }
    }
  }

  documentation {
    content   = "Firestore refused a ledger write for good, or an event's precondition can never hold: a payment is stuck until an engineer acts. RUNBOOK.md#dead-letters."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis, google_logging_metric.unresolved_dead_letter_age]
}
