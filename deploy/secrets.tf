# Webhook signing secrets and the admin token. Only the secret containers are managed here; values are added
# as versions with gcloud (RUNBOOK.md, "Secret rotation") and never enter the Terraform state.
#
# Replication is automatic (multi-region, managed by Google), so one region's outage never blocks the other's
# startup. User-managed replicas would pin the locations, but they cannot be changed after creation: adding
# an ingress region would then replace the secret and destroy its versions (hence also prevent_destroy).

resource "google_secret_manager_secret" "webhook_secrets" {
  secret_id = "paynow-webhook-secrets" # PAYNOW_WEBHOOK_SECRETS: comma-separated, several active at once

  replication {
    auto {}
  }

  lifecycle {
    prevent_destroy = true
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "admin_token" {
  secret_id = "paynow-admin-token" # ADMIN_TOKEN for POST /admin/drain and /admin/undrain

  replication {
    auto {}
  }

  lifecycle {
    prevent_destroy = true
  }
  depends_on = [google_project_service.apis]
}
