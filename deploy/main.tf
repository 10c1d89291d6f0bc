# Project services, the image registry and the Dataflow bucket shared by both regions.

locals {
  topic_id                 = "paynow-events"
  pipeline_subscription_id = "paynow-events-pipeline"
  dlq_topic_id             = "paynow-events-dlq"
  dlq_subscription_id      = "paynow-events-dlq-inspect"
  ingress_service_name     = "paynow-ingress"
  week                     = "604800s"
}

# Every API a resource here (or a deploy step) uses; tests/cloud/test_apply_from_zero.py maps each resource type to
# its API and fails when one is missing. serviceusage.googleapis.com (which enables these) is on in every project.
resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com", # the reconcile schedule (reconcile.tf)
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "firebaserules.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",                  # the service accounts in iam.tf
    "cloudresourcemanager.googleapis.com", # project-level IAM grants (google_project_iam_member)
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com", # the Dataflow and template buckets
  ])
  service            = each.value
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "paynow" {
  location      = var.primary_region
  repository_id = "paynow"
  format        = "DOCKER"
  description   = "paynow-ingress and paynow-ledger-pipeline (Flex Template launcher + worker) images"
  depends_on    = [google_project_service.apis]

  # Storage is billed per GB-month: each build pushes a new image of every kind. Keep the 10 newest versions of
  # each image (a rollback needs the previous ones; RUNBOOK.md "Rollback"), delete the rest after 30 days.
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }
}

# Flex Template specs (scripts/flex-template.sh image writes them from Cloud Build): writable by paynow-builder only;
# the pipeline accounts and operators read them (iam.tf, oncall.tf). Versioned: a spec overwritten by mistake can be
# brought back.
resource "google_storage_bucket" "templates" {
  name                        = "${var.project_id}-templates"
  location                    = "US"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]

  versioning {
    enabled = true
  }
}

# Cloud Run's own request log repeats, for every webhook, what the ingress's JSON line already says (and the LB
# log samples); excluded from ingestion, it is not billed. The ingress's stdout lines (run.googleapis.com/stdout)
# stay: the log-based metrics read them.
resource "google_logging_project_exclusion" "ingress_request_log" {
  name        = "paynow-ingress-request-log"
  description = "Cloud Run request log of paynow-ingress: the ingress writes its own line per request"
  filter      = "LOG_ID(\"run.googleapis.com/requests\") AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.ingress_service_name}\""
  depends_on  = [google_project_service.apis]
}

# Staging and temp files of the Dataflow jobs, Cloud Build source archives, Firestore exports (RUNBOOK.md).
resource "google_storage_bucket" "dataflow" {
  name                        = "${var.project_id}-dataflow"
  location                    = "US"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]

  lifecycle_rule {
    condition {
      age            = 30
      matches_prefix = ["temp/", "staging/"]
    }
    action {
      type = "Delete"
    }
  }
}
