# One global topic for envelopes from every region, the pipeline's ordered subscription, the DLQ and the
# topic Pub/Sub itself dead-letters to.
#
# No Pub/Sub schema is attached to the topic (deploy/README.md, "Why the topic has no Pub/Sub schema"):
# the envelope is Avro single-object encoded (C3 01 + fingerprint + body) while a topic schema with BINARY
# encoding expects a bare Avro datum, and the pipeline must still receive v1/v2 messages to gate them.

resource "google_pubsub_topic" "events" {
  name                       = local.topic_id
  message_retention_duration = local.week # lets an operator seek the subscription back after an incident

  message_storage_policy {
    allowed_persistence_regions = keys(var.regions)
  }
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dlq" {
  name                       = local.dlq_topic_id
  message_retention_duration = local.week
  depends_on                 = [google_project_service.apis]
}

# Messages the pipeline never acknowledged after max_delivery_attempts (a poison message for the runner
# itself). They are original envelopes, not DLQ records, so they get their own topic (RUNBOOK.md).
resource "google_pubsub_topic" "undeliverable" {
  name                       = local.undeliverable_topic_id
  message_retention_duration = local.week
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_subscription" "pipeline" {
  name                       = local.pipeline_subscription_id
  topic                      = google_pubsub_topic.events.id
  ack_deadline_seconds       = 60
  enable_message_ordering    = true
  message_retention_duration = local.week
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expires, even when both jobs are stopped
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # 100 (the maximum): Dataflow redelivers in-flight messages on rebalancing and update, which counts as
  # attempts; business failures never get here, the pipeline sends them to the DLQ topic with a verdict.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.undeliverable.id
    max_delivery_attempts = 100
  }
}

resource "google_pubsub_subscription" "dlq_inspect" {
  name                       = local.dlq_subscription_id
  topic                      = google_pubsub_topic.dlq.id
  ack_deadline_seconds       = 60
  message_retention_duration = local.week
  enable_message_ordering    = false

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "undeliverable_inspect" {
  name                       = local.undeliverable_subscription
  topic                      = google_pubsub_topic.undeliverable.id
  ack_deadline_seconds       = 60
  message_retention_duration = local.week

  expiration_policy {
    ttl = ""
  }
}
