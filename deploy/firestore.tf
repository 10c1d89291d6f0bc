# The ledger database, the TTL policy that expires webhookEvents, and the client security rules.

resource "google_firestore_database" "ledger" {
  name                              = "(default)"
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"
  depends_on                        = [google_project_service.apis]
}

# webhookEvents/{eventId}.expiresAt (processedAt + --event_ttl_days) is deleted by Firestore's TTL policy.
# The empty index_config exempts the monotonically increasing timestamp from single-field indexing,
# which would otherwise hotspot writes.
resource "google_firestore_field" "webhook_events_ttl" {
  database   = google_firestore_database.ledger.name
  collection = "webhookEvents"
  field      = "expiresAt"

  ttl_config {}
  index_config {}
}

resource "google_firebaserules_ruleset" "firestore" {
  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/firestore.rules")
    }
  }
  depends_on = [google_firestore_database.ledger]
}

resource "google_firebaserules_release" "firestore" {
  name         = "cloud.firestore"
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"
  project      = var.project_id

  lifecycle {
    replace_triggered_by = [google_firebaserules_ruleset.firestore]
  }
}

# --- backup and restore (RUNBOOK.md, "Restoring the ledger") -------------------------------------------------
# Two independent ways back: point-in-time recovery (point_in_time_recovery_enablement above) reads any minute
# of the last 7 days; scheduled backups keep daily copies for a week and weekly ones for 14 weeks (the
# longest retention Firestore allows), and a backup survives the database's deletion.

resource "google_firestore_backup_schedule" "daily" {
  database  = google_firestore_database.ledger.name
  retention = "604800s" # 7 days, the maximum for daily backups

  daily_recurrence {}
}

resource "google_firestore_backup_schedule" "weekly" {
  database  = google_firestore_database.ledger.name
  retention = "8467200s" # 14 weeks, the maximum

  weekly_recurrence {
    day = "SUNDAY"
  }
}
