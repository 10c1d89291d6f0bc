output "load_balancer_ip" {
  description = "Point the DNS A record of var.domain here; PayNow posts to https://DOMAIN/webhooks/paynow."
  value       = google_compute_global_address.ingress.address
}

output "ingress_services" {
  description = "Cloud Run ingress service per region."
  value       = { for region, svc in google_cloud_run_v2_service.ingress : region => svc.uri }
}

output "pipeline_service_accounts" {
  description = "Service account per region for scripts/flex-template.sh (SERVICE_ACCOUNT)."
  value       = { for region, sa in google_service_account.pipeline : region => sa.email }
}

output "pubsub" {
  description = "Topic and subscription names the ingress, pipeline and `paynow dlq` use."
  value = {
    topic            = google_pubsub_topic.events.id
    subscription     = google_pubsub_subscription.pipeline.id
    dlq_topic        = google_pubsub_topic.dlq.id
    dlq_subscription = google_pubsub_subscription.dlq_inspect.id
  }
}

output "dataflow_bucket" {
  value = google_storage_bucket.dataflow.name
}
