# Per-region service accounts with least privilege (DESIGN §7). Every grant is additive (*_iam_member) and
# scoped to the one resource it is for, except the roles that only exist at project level (Dataflow worker
# and developer, Firestore user, Cloud Build editor, log writer). tests/cloud/test_deploy.py holds the list
# each account may have.
#
# account_id is 6-30 characters: "ing-" / "pipe-" + the region fits every Google Cloud region (the longest,
# northamerica-northeast1, is 23); variables.tf refuses a region key that would not fit.

# --- ingress: publish to the events topic, read its two secrets; nothing else --------------------------------

resource "google_service_account" "ingress" {
  for_each     = var.regions
  account_id   = "ing-${each.key}"
  display_name = "paynow ingress (${each.key}): publish-only"
  depends_on   = [google_project_service.apis]
}

resource "google_pubsub_topic_iam_member" "ingress_publish" {
  for_each = var.regions
  topic    = google_pubsub_topic.events.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.ingress[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "ingress_webhook_secrets" {
  # every region's ingress reads every subscription's secret
  for_each  = { for pair in setproduct(keys(var.regions), var.webhook_event_types) : "${pair[0]}/${pair[1]}" => { region = pair[0], type = pair[1] } }
  secret_id = google_secret_manager_secret.webhook_secrets[each.value.type].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.ingress[each.value.region].email}"
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
  account_id   = "pipe-${each.key}"
  display_name = "paynow ledger pipeline (${each.key}): subscribe, DLQ publish, Firestore write"
  depends_on   = [google_project_service.apis]
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

# Staging and temp files of the job.
resource "google_storage_bucket_iam_member" "pipeline_bucket" {
  for_each = var.regions
  bucket   = google_storage_bucket.dataflow.name
  role     = "roles/storage.objectAdmin"
  member   = "serviceAccount:${google_service_account.pipeline[each.key].email}"
}

# The Flex Template spec the launcher reads: read only (main.tf: only the builder writes template specs).
resource "google_storage_bucket_iam_member" "pipeline_templates" {
  for_each = var.regions
  bucket   = google_storage_bucket.templates.name
  role     = "roles/storage.objectViewer"
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

# --- Cloud Build: one build account that pushes both images ------------------------------------------------
# `gcloud builds submit --service-account` (scripts/flex-template.sh image, deploy/README.md step 4) runs the
# build as this account instead of the project's default, which new projects no longer grant anything. The
# source archive is staged in the Dataflow bucket (--gcs-source-staging-dir), so it needs no other bucket.

resource "google_service_account" "builder" {
  account_id   = "paynow-builder"
  display_name = "paynow Cloud Build: push the ingress and pipeline images"
  depends_on   = [google_project_service.apis]
}

resource "google_artifact_registry_repository_iam_member" "builder_push" {
  location   = google_artifact_registry_repository.paynow.location
  repository = google_artifact_registry_repository.paynow.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_storage_bucket_iam_member" "builder_source" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.builder.email}"
}

# The template spec: the build's last step writes gs://PROJECT-templates/paynow-ledger-TAG.json (the only writer).
resource "google_storage_bucket_iam_member" "builder_templates" {
  bucket = google_storage_bucket.templates.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_project_iam_member" "builder_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter" # build logs (cloudbuild yaml: logging CLOUD_LOGGING_ONLY)
  member  = "serviceAccount:${google_service_account.builder.email}"
}

# --- operators: build images, launch and update the Flex Template jobs --------------------------------------
# Launching a Flex Template needs dataflow.developer, and acting as the worker account the job runs as
# (iam.serviceAccountUser on it); building needs Cloud Build and acting as the build account; both write to
# the Dataflow bucket (source archive, template spec).

locals {
  operator_act_as_pipeline = {
    for pair in setproduct(keys(var.regions), var.operators) : "${pair[0]} ${pair[1]}" => {
      region = pair[0]
      member = pair[1]
    }
  }
}

resource "google_project_iam_member" "operators_dataflow" {
  for_each   = toset(var.operators)
  project    = var.project_id
  role       = "roles/dataflow.developer"
  member     = each.value
  depends_on = [google_project_service.apis] # project IAM goes through the Resource Manager API
}

resource "google_project_iam_member" "operators_cloudbuild" {
  for_each   = toset(var.operators)
  project    = var.project_id
  role       = "roles/cloudbuild.builds.editor"
  member     = each.value
  depends_on = [google_project_service.apis] # project IAM goes through the Resource Manager API
}

resource "google_service_account_iam_member" "operators_act_as_pipeline" {
  for_each           = local.operator_act_as_pipeline
  service_account_id = google_service_account.pipeline[each.value.region].name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value.member
}

resource "google_service_account_iam_member" "operators_act_as_builder" {
  for_each           = toset(var.operators)
  service_account_id = google_service_account.builder.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

resource "google_storage_bucket_iam_member" "operators_bucket" {
  for_each = toset(var.operators)
  bucket   = google_storage_bucket.dataflow.name
  role     = "roles/storage.objectAdmin"
  member   = each.value
}
