# Per-region service accounts with least privilege (DESIGN §7). Every grant is additive (*_iam_member) and
# scoped to the one resource it is for, except the two roles that only exist at project level
# (Dataflow worker, Firestore user). tests/cloud/test_deploy.py holds the list each account may have.

# --- ingress: publish to the events topic, read its two secrets; nothing else --------------------------------

resource "google_service_account" "ingress" {
  for_each     = var.regions
  account_id   = "ingress-${each.key}"
  display_name = "paynow ingress (${each.key}): publish-only"
}

resource "google_pubsub_topic_iam_member" "ingress_publish" {
  for_each = var.regions
  topic    = google_pubsub_topic.events.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.ingress[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "ingress_webhook_secrets" {
  for_each  = var.regions
  secret_id = google_secret_manager_secret.webhook_secrets.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.ingress[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "ingress_admin_token" {
  for_each  = var.regions
  secret_id = google_secret_manager_secret.admin_token.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.ingress[each.key].email}"
}

# --- pipeline (primary and standby Dataflow jobs): subscribe, publish dead letters, write Firestore ---------

resource "google_service_account" "pipeline" {
  for_each     = var.regions
  account_id   = "pipeline-${each.key}"
  display_name = "paynow ledger pipeline (${each.key}): subscribe, DLQ publish, Firestore write"
}

resource "google_project_iam_member" "pipeline_dataflow_worker" {
  for_each = var.regions
  project  = var.project_id
  role     = "roles/dataflow.worker"
  member   = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

resource "google_project_iam_member" "pipeline_firestore" {
  for_each = var.regions
  project  = var.project_id
  role     = "roles/datastore.user"
  member   = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

resource "google_pubsub_subscription_iam_member" "pipeline_subscribe" {
  for_each     = var.regions
  subscription = google_pubsub_subscription.pipeline.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

# Dataflow's Pub/Sub source reads the subscription's metadata (ack deadline, topic) at start.
resource "google_pubsub_subscription_iam_member" "pipeline_view_subscription" {
  for_each     = var.regions
  subscription = google_pubsub_subscription.pipeline.id
  role         = "roles/pubsub.viewer"
  member       = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

resource "google_pubsub_topic_iam_member" "pipeline_dlq_publish" {
  for_each = var.regions
  topic    = google_pubsub_topic.dlq.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

# Staging and temp files of the job, and the Flex Template spec the launcher reads.
resource "google_storage_bucket_iam_member" "pipeline_bucket" {
  for_each = var.regions
  bucket   = google_storage_bucket.dataflow.name
  role     = "roles/storage.objectAdmin"
  member   = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

# The launcher and every worker pull the Flex Template image.
resource "google_artifact_registry_repository_iam_member" "pipeline_image" {
  for_each   = var.regions
  location   = google_artifact_registry_repository.paynow.location
  repository = google_artifact_registry_repository.paynow.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

# --- Pub/Sub's own service agent: forwards undeliverable messages (dead-letter policy) ----------------------

resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publish" {
  topic  = google_pubsub_topic.undeliverable.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent_member
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_dead_letter_ack" {
  subscription = google_pubsub_subscription.pipeline.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent_member
}
