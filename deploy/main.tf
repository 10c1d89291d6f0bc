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
}

# Flex Template specs, staging and temp files of the Dataflow jobs (scripts/flex-template.sh).
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
