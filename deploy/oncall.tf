# The on-call's rights: one custom role with every permission a RUNBOOK.md command needs, granted to var.operators,
# plus the resource-level grants in iam.tf (acting as the service accounts a launch or deploy runs as, the buckets).
# tests/cloud/test_oncall.py lists each runbook command with the permissions it needs and fails when a command is
# not listed or a permission is missing here. `terraform apply` itself is not in it: the first apply and changes to
# IAM need a project owner (deploy/README.md).

locals {
  oncall_permissions = sort([
    # gcloud logging read
    "logging.logEntries.list",
    # Dataflow: jobs list/describe, drain, flex-template run (new job and --update), beta metrics list
    "dataflow.jobs.list", "dataflow.jobs.get", "dataflow.jobs.cancel", "dataflow.jobs.create",
    "dataflow.jobs.updateContents", "dataflow.messages.list", "dataflow.metrics.get",
    # load balancer: backend-services describe, add-backend / remove-backend of a serverless NEG
    "compute.backendServices.get", "compute.backendServices.update", "compute.regionNetworkEndpointGroups.use",
    # Cloud Run: revisions list, services describe / update / update-traffic / deploy, jobs execute --wait
    "run.revisions.list", "run.revisions.get", "run.services.get", "run.services.update", "run.operations.get",
    "run.jobs.get", "run.jobs.run", "run.executions.get", "run.executions.list",
    # Secret Manager: versions access / add / list / disable / destroy (rotation), secrets delete (the one-time move
    # off the single paynow-webhook-secrets)
    "secretmanager.versions.access", "secretmanager.versions.add", "secretmanager.versions.list",
    "secretmanager.versions.get", "secretmanager.versions.disable", "secretmanager.versions.destroy",
    "secretmanager.secrets.delete",
    # Firestore: backups list, databases create / restore / describe / update / delete, export / import
    "datastore.backups.list", "datastore.backups.get", "datastore.backups.restoreDatabase",
    "datastore.databases.create", "datastore.databases.get", "datastore.databases.getMetadata",
    "datastore.databases.update", "datastore.databases.delete", "datastore.databases.export",
    "datastore.databases.import", "datastore.operations.get", "datastore.operations.list",
    # paynow audit / dlq / seed / credit / erase / reconcile: the ledger's documents
    "datastore.entities.get", "datastore.entities.list", "datastore.entities.create", "datastore.entities.update",
    "datastore.entities.delete",
    # Pub/Sub: subscriptions seek (restore), paynow dlq replay / reconcile (publish), paynow erase (DLQ subscription)
    "pubsub.subscriptions.consume", "pubsub.subscriptions.get", "pubsub.topics.publish", "pubsub.topics.get",
    # Cloud Scheduler: pause / resume the reconcile schedule (restore)
    "cloudscheduler.jobs.get", "cloudscheduler.jobs.pause", "cloudscheduler.jobs.enable",
    # gcloud builds submit: create the build, and the staging bucket's metadata (objectAdmin lacks buckets.get)
    "cloudbuild.builds.create", "cloudbuild.builds.get", "cloudbuild.builds.list", "storage.buckets.get",
  ])
}

resource "google_project_iam_custom_role" "oncall" {
  role_id     = "paynowOncall"
  title       = "paynow on-call"
  description = "Every command RUNBOOK.md gives (tests/cloud/test_oncall.py)."
  permissions = local.oncall_permissions
  depends_on  = [google_project_service.apis]
}

resource "google_project_iam_member" "operators_oncall" {
  for_each = toset(var.operators)
  project  = var.project_id
  role     = google_project_iam_custom_role.oncall.id
  member   = each.value
}

# `gcloud run deploy` / `services update` make a revision that runs as the region's ingress account.
resource "google_service_account_iam_member" "operators_act_as_ingress" {
  for_each           = local.operator_act_as_pipeline
  service_account_id = google_service_account.ingress[each.value.region].name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value.member
}

# `gcloud storage ls gs://$PROJECT-templates/` and the launch's existence check: read, never write.
resource "google_storage_bucket_iam_member" "operators_templates" {
  for_each = toset(var.operators)
  bucket   = google_storage_bucket.templates.name
  role     = "roles/storage.objectViewer"
  member   = each.value
}
