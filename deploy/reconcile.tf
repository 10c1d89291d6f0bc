# Reconciliation with PayNow (issue K): a Cloud Run job, run by Cloud Scheduler, that pages through PayNow's webhook
# delivery history and completed orders and re-publishes onto the events topic what the ledger never saw
# (ops/admin/reconcile.py). A recovery means the push path failed, so each one is a log line, counted by the
# log-based metric reconcile_recovered_events, and any recovery raises an alert.
#
# Why a job and not the pipeline's side input: the reconciler pages a rate-limited external API (429 with
# Retry-After, 5xx backoff) for minutes; inside the streaming job that wait would hold bundles and the pipeline
# would publish into its own input. As a job it runs to completion on a schedule, is idempotent (the pipeline's
# create-precondition on webhookEvents/{eventId}), has its own least-privilege account and exit status, and the
# same code runs by hand as `paynow reconcile`.

variable "reconcile_image" {
  description = "Container image of the reconciler (deploy/reconcile.Dockerfile), e.g. us-central1-docker.pkg.dev/P/paynow/paynow-reconcile:TAG."
  type        = string
}

variable "paynow_store_id" {
  description = "PayNow store id whose webhook history and orders are reconciled (PAYNOW_STORE_ID)."
  type        = string
}

variable "reconcile_schedule" {
  description = "Cloud Scheduler cron (UTC) of the reconciliation job."
  type        = string
  default     = "*/30 * * * *"
}

variable "reconcile_window" {
  description = "--since of each run: PayNow's retry horizon plus a margin, so a delivery PayNow gave up on is seen by several runs."
  type        = string
  default     = "48h"
}

variable "reconcile_min_age_seconds" {
  description = "--min-age: a delivery PayNow still retries that is younger than this is in flight, not missing."
  type        = number
  default     = 1800
}

locals {
  reconcile_job_name = "paynow-reconcile"
  reconcile_log = join(" AND ", [
    "resource.type=\"cloud_run_job\"",
    "resource.labels.job_name=\"${local.reconcile_job_name}\"",
  ])
}

# --- identity: read Firestore, peek the DLQ, publish recoveries, read its API key; nothing else ----------------

resource "google_service_account" "reconcile" {
  account_id   = "paynow-reconcile"
  display_name = "paynow reconciler: read ledger and DLQ, publish recoveries, read the PayNow API key"
  depends_on   = [google_project_service.apis]
}

resource "google_pubsub_topic_iam_member" "reconcile_publish" {
  topic  = google_pubsub_topic.events.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.reconcile.email}"
}

# peeking the DLQ pulls without acking and hands the messages back (ops/admin/dlq.py peek/release)
resource "google_pubsub_subscription_iam_member" "reconcile_dlq_peek" {
  subscription = google_pubsub_subscription.dlq_inspect.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.reconcile.email}"
}

resource "google_project_iam_member" "reconcile_firestore_read" {
  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = "serviceAccount:${google_service_account.reconcile.email}"
}

resource "google_secret_manager_secret_iam_member" "reconcile_api_key" {
  secret_id = google_secret_manager_secret.paynow_api_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.reconcile.email}"
}

# Cloud Scheduler runs the job with this same account's token
resource "google_cloud_run_v2_job_iam_member" "reconcile_invoker" {
  location = google_cloud_run_v2_job.reconcile.location
  name     = google_cloud_run_v2_job.reconcile.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.reconcile.email}"
}

# The store API key (PAYNOW_API_KEY); its value is added as a version with gcloud, never in the Terraform state.
resource "google_secret_manager_secret" "paynow_api_key" {
  secret_id = "paynow-api-key"

  replication {
    auto {}
  }

  lifecycle {
    prevent_destroy = true
  }
  depends_on = [google_project_service.apis]
}

# --- the job and its schedule ---------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "reconcile" {
  name                = local.reconcile_job_name
  location            = var.primary_region
  deletion_protection = false

  template {
    task_count = 1
    template {
      service_account = google_service_account.reconcile.email
      timeout         = "1800s"
      max_retries     = 1 # a rerun is safe (idempotent); more would only repeat a bad API key's failure

      containers {
        image = var.reconcile_image
        args = ["--since", var.reconcile_window, "--min-age", tostring(var.reconcile_min_age_seconds),
        "--json-log"]

        env {
          name  = "GOOGLE_CLOUD_PROJECT"
          value = var.project_id
        }
        env {
          name  = "REGION"
          value = var.primary_region
        }
        env {
          name  = "PAYNOW_STORE_ID"
          value = var.paynow_store_id
        }
        env {
          name = "PAYNOW_API_KEY"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.paynow_api_key.secret_id
              version = "latest"
            }
          }
        }

        resources {
          limits = {
            cpu    = "1"
            memory = "1Gi"
          }
        }
      }
    }
  }
  depends_on = [google_project_service.apis, google_secret_manager_secret_iam_member.reconcile_api_key]
}

resource "google_cloud_scheduler_job" "reconcile" {
  name             = "paynow-reconcile"
  region           = var.primary_region
  schedule         = var.reconcile_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "320s"

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.primary_region}/jobs/${google_cloud_run_v2_job.reconcile.name}:run"

    oauth_token {
      service_account_email = google_service_account.reconcile.email
    }
  }
  depends_on = [google_project_service.apis, google_cloud_run_v2_job_iam_member.reconcile_invoker]
}

# --- metric and alert -----------------------------------------------------------------------------------------

# One log line per recovered event: {"severity": "WARNING", "message": "reconcile recovered event", "eventId", ...}
resource "google_logging_metric" "reconcile_recovered_events" {
  name        = "paynow/reconcile_recovered_events"
  description = "Events PayNow recorded that the ledger never saw, recovered by the reconciler (push path failures)."
  filter      = "${local.reconcile_log} AND jsonPayload.message=\"reconcile recovered event\""
  label_extractors = {
    region     = "EXTRACT(jsonPayload.region)"
    event_type = "EXTRACT(jsonPayload.eventType)"
  }
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key = "region"
    }
    labels {
      key = "event_type"
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "reconcile_recovered" {
  display_name          = "paynow: reconciliation recovered events (the push path lost payments)"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "ticket"
  }

  conditions {
    display_name = "PaynowReconcileRecovered: reconcile_recovered_events > 0"
    condition_prometheus_query_language {
      query               = "sum(increase(logging_googleapis_com:user_paynow_reconcile_recovered_events[5m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
      labels = {
        severity = "ticket"
      }
      disable_metric_validation = true # no series before the first recovery (monitoring.tf)
    }
  }

  documentation {
    content   = "The reconciler re-published events PayNow recorded but the ledger never saw: PayNow's retries ended without a 2xx (both regions down, a wrong webhook secret, a 4xx bug). The ledger is whole again; find why the push path failed. RUNBOOK.md#reconciliation."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.reconcile_recovered_events]
}
