# The load balancer's edge: a Cloud Armor policy on the backend service and an SSL policy (TLS 1.2 minimum) on the
# HTTPS proxy (both attached in lb.tf), and the load balancer's request-log sampling.
#
# No preconfigured WAF rules: webhook bodies are JSON with free-text fields (product names, custom variables), and a
# false positive would refuse a payment PayNow then retries until it gives up; the body is authenticated by its
# HMAC signature instead. The policy keeps the internet to the routes the URL map serves and limits each client.

variable "lb_log_sample_rate" {
  description = "Share of load-balancer requests logged (0-1). Every webhook already logs one ingress line; the LB log is for refused and unanswered requests, so a sample is enough."
  type        = number
  default     = 0.05
  validation {
    condition     = var.lb_log_sample_rate >= 0 && var.lb_log_sample_rate <= 1
    error_message = "lb_log_sample_rate is a share between 0 and 1."
  }
}

variable "armor_rate_limit_per_minute" {
  description = "Requests per minute one client IP may send before Cloud Armor answers 429 (PayNow's senders stay far below: it retries with backoff)."
  type        = number
  default     = 6000
}

locals {
  # The URL map's public routes (lb.tf local.public_paths), as a CEL expression: POST to a webhook path, GET /healthz.
  armor_allowed = "(request.method == 'POST' && request.path.matches('^(/webhooks/paynow|/api/paynow/webhook)$')) || (request.method == 'GET' && request.path == '/healthz')"
}

resource "google_compute_security_policy" "edge" {
  name        = "paynow-edge"
  description = "paynow ingress: only the public routes, a per-client rate limit"
  type        = "CLOUD_ARMOR"
  depends_on  = [google_project_service.apis]

  rule {
    action      = "deny(404)"
    priority    = 1000
    description = "anything but the public routes (the URL map would answer 404 as well)"
    match {
      expr {
        expression = "!(${local.armor_allowed})"
      }
    }
  }

  rule {
    action      = "throttle"
    priority    = 2000
    description = "per-client rate limit"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.armor_rate_limit_per_minute
        interval_sec = 60
      }
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "default rule"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}

resource "google_compute_ssl_policy" "edge" {
  name            = "paynow-edge"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
  depends_on      = [google_project_service.apis]
}
