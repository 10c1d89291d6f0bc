# Global external Application Load Balancer: one anycast IP and certificate, a serverless NEG per region.
#
# Health: serverless NEG backends cannot have load balancer health checks (the API refuses a backend
# service that has both). Two mechanisms replace them:
#   1. Cloud Run service health: each instance's readiness probe on /readyz (ingress.tf); Cloud Run reports
#      a region whose instances fail it as unhealthy and the load balancer fails over to the other region.
#   2. Outlier detection on the backend service: a region answering 5xx / failing at the gateway is ejected
#      for base_ejection_time, while the retry policy re-sends the failed request (webhooks are idempotent
#      by eventId, so a retried POST is safe).

locals {
  serving_regions = var.serving_regions == null ? keys(var.regions) : var.serving_regions
  # The only paths the internet may reach (ingress/openapi.py WEBHOOK_PATHS and the liveness check). The
  # ingress also serves /admin/drain, /admin/undrain, /metrics, /readyz and /openapi.json: through the load
  # balancer those are answered 404 by the URL map below and never reach Cloud Run.
  public_paths = ["/webhooks/paynow", "/api/paynow/webhook", "/healthz"]
}

resource "google_compute_global_address" "ingress" {
  name       = "paynow-ingress"
  depends_on = [google_project_service.apis]
}

resource "google_compute_region_network_endpoint_group" "ingress" {
  for_each              = var.regions
  name                  = "paynow-ingress-${each.key}"
  region                = each.key
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloud_run_v2_service.ingress[each.key].name
  }
}

resource "google_compute_backend_service" "ingress" {
  name                  = "paynow-ingress"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTP" # the front end to Cloud Run hop is encrypted by Google either way
  # No timeout_sec: the API refuses it on a backend service with serverless NEGs; the request timeout is the
  # Cloud Run service's own (template.timeout in ingress.tf).

  dynamic "backend" {
    for_each = toset(local.serving_regions)
    content {
      group = google_compute_region_network_endpoint_group.ingress[backend.value].id
    }
  }

  outlier_detection {
    consecutive_errors                    = 5
    consecutive_gateway_failure           = 3
    enforcing_consecutive_errors          = 100
    enforcing_consecutive_gateway_failure = 100
    max_ejection_percent                  = 50 # never eject both regions
    interval {
      seconds = 1
    }
    base_ejection_time {
      seconds = 30
    }
  }

  security_policy = google_compute_security_policy.edge.id # edge.tf

  log_config {
    enable      = true
    sample_rate = var.lb_log_sample_rate # edge.tf: the ingress logs every webhook already
  }
}

resource "google_compute_url_map" "ingress" {
  name            = "paynow-ingress"
  default_service = google_compute_backend_service.ingress.id

  # Whatever no rule below routes is answered 404 by the load balancer itself: a fault-injection abort of
  # 100 % of those requests, before any backend is chosen.
  default_route_action {
    fault_injection_policy {
      abort {
        http_status = 404
        percentage  = 100
      }
    }
  }

  host_rule {
    hosts        = ["*"]
    path_matcher = "public"
  }

  path_matcher {
    name            = "public"
    default_service = google_compute_backend_service.ingress.id

    # Not a public path (e.g. /admin/drain, /metrics): 404 from the load balancer.
    default_route_action {
      fault_injection_policy {
        abort {
          http_status = 404
          percentage  = 100
        }
      }
    }

    path_rule {
      paths   = local.public_paths
      service = google_compute_backend_service.ingress.id
      route_action {
        # Retried requests are safe: the eventId makes a webhook idempotent. Conditions from HttpRetryPolicy.
        retry_policy {
          num_retries      = 2
          retry_conditions = ["5xx", "gateway-error", "connect-failure", "refused-stream"]
          per_try_timeout {
            seconds = 10
          }
        }
      }
    }
  }
}

resource "google_compute_managed_ssl_certificate" "ingress" {
  name = "paynow-ingress"
  managed {
    domains = [var.domain]
  }
  depends_on = [google_project_service.apis]
}

resource "google_compute_target_https_proxy" "ingress" {
  name             = "paynow-ingress"
  url_map          = google_compute_url_map.ingress.id
  ssl_certificates = [google_compute_managed_ssl_certificate.ingress.id]
  ssl_policy       = google_compute_ssl_policy.edge.id # edge.tf: TLS 1.2 minimum
}

resource "google_compute_global_forwarding_rule" "ingress" {
  name                  = "paynow-ingress-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.ingress.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.ingress.id
}
