# Project services, the image registry and the Dataflow bucket shared by both regions.

locals {
  topic_id                    = "paynow-events"
  pipeline_subscription_id    = "paynow-events-pipeline"
  dlq_topic_id                = "paynow-events-dlq"
  dlq_subscription_id         = "paynow-events-dlq-inspect"
  undeliverable_topic_id      = "paynow-events-undeliverable"
  undeliverable_subscription  = "paynow-events-undeliverable-inspect"
  ingress_service_name        = "paynow-ingress"
  week                        = "604800s"
  pubsub_service_agent_member = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "firebaserules.googleapis.com",
    "firestore.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
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
