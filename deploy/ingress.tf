# The ingress on Cloud Run: one service per region from one image, region-specific settings, reachable only
# through the global load balancer.

resource "google_cloud_run_v2_service" "ingress" {
  for_each = var.regions

  name                = local.ingress_service_name
  location            = each.key
  ingress             = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  launch_stage        = "BETA" # readiness probes (the block is in hashicorp/google 8.x; the API feature is preview)
  deletion_protection = true
  # PayNow cannot send Google credentials, so the invoker IAM check would answer every webhook 403. The service
  # is reachable only through the load balancer (ingress above); webhooks authenticate by HMAC signature.
  invoker_iam_disabled = true

  template {
    service_account                  = google_service_account.ingress[each.key].email
    max_instance_request_concurrency = 80
    timeout                          = "30s"

    scaling {
      # At least one warm instance per region: Cloud Run computes the region's health from its instances'
      # readiness probes, and a cold start would eat into PayNow's timeout.
      min_instance_count = each.value.min_instances
      max_instance_count = each.value.max_instances
    }

    containers {
      image = var.ingress_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = false # the publisher batches in the background between requests
        startup_cpu_boost = true
      }

      env {
        name  = "REGION"
        value = each.key
      }
      env {
        name  = "SERVICE_NAME"
        value = local.ingress_service_name
      }
      env {
        name  = "LOG_LEVEL"
        value = var.log_level
      }
      env {
        # The client is counted from the right of X-Forwarded-For: Google's external Application Load Balancer
        # appends "<client>, <LB address>" (2 entries) to whatever the client sent. Cloud Run never shows the
        # container the LB as its TCP peer, so the peer cannot say whom to believe.
        name  = "FORWARDED_HOPS"
        value = "2"
      }
      env {
        name  = "MULTI_REGION_ENABLED"
        value = tostring(lookup(var.multi_region_enabled, each.key, true))
      }
      env {
        name  = "PRIMARY_REGION"
        value = var.primary_region
      }
      env {
        name  = "SECONDARY_REGION"
        value = var.secondary_region
      }
      env {
        name  = "FAILOVER_ENABLED"
        value = "true"
      }
      env {
        name  = "EVENT_SCHEMA_VERSION"
        value = "4"
      }
      env {
        name  = "EVENT_SCHEMA_MIN_COMPATIBLE"
        value = tostring(var.event_schema_min_compatible)
      }
      env {
        name  = "PUBSUB_TOPIC"
        value = google_pubsub_topic.events.id
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        # Cloud Run sends traffic to 0.0.0.0:$PORT; locally the ingress binds loopback.
        name  = "HOST"
        value = "0.0.0.0"
      }
      dynamic "env" {
        # One variable per PayNow webhook subscription, from its own secret; the ingress binds each to its type.
        for_each = google_secret_manager_secret.webhook_secrets
        content {
          name = "PAYNOW_WEBHOOK_SECRETS_${env.key}"
          value_source {
            secret_key_ref {
              secret  = env.value.secret_id
              version = "latest"
            }
          }
        }
      }
      env {
        name = "ADMIN_TOKEN"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.admin_token.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 2
        timeout_seconds   = 1
        failure_threshold = 15
        http_get {
          path = "/healthz"
        }
      }

      liveness_probe {
        period_seconds    = 10
        timeout_seconds   = 2
        failure_threshold = 3
        http_get {
          path = "/healthz"
        }
      }

      # /readyz is 503 while draining, while the publisher is unhealthy and when MULTI_REGION_ENABLED=false
      # on the secondary: failing instances leave the pool, and a region below Cloud Run's healthy share is
      # reported unhealthy to the load balancer, which then sends PayNow's webhooks to the other region.
      readiness_probe {
        period_seconds    = 2
        timeout_seconds   = 1
        failure_threshold = 2
        success_threshold = 1
        http_get {
          path = "/readyz"
        }
      }
    }
  }

  # Traffic splits belong to operators (RUNBOOK.md: canary and fast rollback with gcloud); Terraform creates
  # the service with 100 % on the latest revision and leaves the split alone afterwards.
  lifecycle {
    ignore_changes = [traffic, client, client_version]
  }

  depends_on = [
    google_secret_manager_secret_iam_member.ingress_webhook_secrets,
    google_secret_manager_secret_iam_member.ingress_admin_token,
  ]
}
