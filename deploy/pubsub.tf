# One global topic for envelopes from every region, the pipeline's ordered subscription and the DLQ.
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

# The DLQ topic is a stream of dead letters (for inspection and any later consumer), not their record: the
# pipeline first records each one in Firestore deadLetters/{eventId} (dead_letters.tf), kept until its event is
# committed, and `paynow dlq` lists and replays from that record. So a week of retention here is enough; a
# message that expires or is acked loses nothing (the record keeps the envelope bytes).
resource "google_pubsub_topic" "dlq" {
  name                       = local.dlq_topic_id
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

  # No dead_letter_policy and no retry_policy (DESIGN §5): Pub/Sub does not support them on a subscription
  # Dataflow reads. Dataflow acknowledges a message once it is durably in the job, so Pub/Sub never sees the
  # pipeline's failures; the pipeline's own DLQ topic (paynow-events-dlq, with a verdict) is the only
  # dead-letter path.
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
