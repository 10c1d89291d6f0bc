# Webhook signing secrets and the admin token. Only the secret containers are managed here; values are added
# as versions with gcloud (RUNBOOK.md, "Secret rotation") and never enter the Terraform state.
#
# One secret per PayNow webhook subscription: PayNow subscribes each subscription to one event type and generates
# its secret (reset with UpdateWebhookDto.reset_secret). paynow-webhook-<TYPE> holds that subscription's secret
# (two, comma-separated, during a rotation's overlap) and reaches the ingress as PAYNOW_WEBHOOK_SECRETS_<TYPE>,
# which verifies only deliveries of <TYPE>: a leaked secret of one subscription cannot sign another's events.
#
# Replication is automatic (multi-region, managed by Google), so one region's outage never blocks the other's
# startup. User-managed replicas would pin the locations, but they cannot be changed after creation: adding
# an ingress region would then replace the secret and destroy its versions (hence also prevent_destroy).

resource "google_secret_manager_secret" "webhook_secrets" {
  for_each  = toset(var.webhook_event_types)
  secret_id = "paynow-webhook-${each.key}" # PAYNOW_WEBHOOK_SECRETS_<TYPE>: that subscription's secret(s)

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
