# Webhook signing secrets and the admin token, replicated to every ingress region so one region's outage
# never blocks the other's startup. Only the secret containers are managed here; values are added as
# versions with gcloud (RUNBOOK.md, "Secret rotation") and never enter the Terraform state.

resource "google_secret_manager_secret" "webhook_secrets" {
  secret_id = "paynow-webhook-secrets" # PAYNOW_WEBHOOK_SECRETS: comma-separated, several active at once

  replication {
    user_managed {
      dynamic "replicas" {
        for_each = keys(var.regions)
        content {
          location = replicas.value
        }
      }
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "admin_token" {
  secret_id = "paynow-admin-token" # ADMIN_TOKEN for POST /admin/drain and /admin/undrain

  replication {
    user_managed {
      dynamic "replicas" {
        for_each = keys(var.regions)
        content {
          location = replicas.value
        }
      }
    }
  }
  depends_on = [google_project_service.apis]
}
