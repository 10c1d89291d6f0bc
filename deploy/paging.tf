# Pages whenever money is at risk, beyond the DESIGN §6 alerts (monitoring.tf): the public /healthz through the load
# balancer, the load balancer's own 5xx share, a stalled or lagging pipeline, a failing reconciler. Each query is
# deploy/prometheus/cloud_rules.yml's expression verbatim (built-in Cloud Monitoring series: the local stack has no
# twin), promtool-tested in tests/prometheus/cloud_rules_test.yml; tests/cloud/test_paging.py compares them.

resource "google_monitoring_uptime_check_config" "healthz" {
  display_name = "paynow-healthz"
  timeout      = "10s"
  period       = "60s"

  http_check {
    path         = "/healthz"
    port         = 443
    use_ssl      = true
    validate_ssl = true
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = var.domain
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "healthz_down" {
  display_name          = "paynow: /healthz through the load balancer fails (page)"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "page"
  }

  conditions {
    display_name = "PaynowHealthzDown"
    condition_prometheus_query_language {
      query               = <<-EOT
        count by (host) (max_over_time(monitoring_googleapis_com:uptime_check_check_passed{monitored_resource="uptime_url"}[3m]) == 0) >= 2
      EOT
      duration            = "120s"
      evaluation_interval = "60s"
      labels = {
        severity = "page"
      }
    }
  }

  documentation {
    content   = "The public /healthz fails from several uptime-check locations: PayNow cannot deliver webhooks (DNS, certificate, load balancer, Cloud Armor or both regions). RUNBOOK.md#failover."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis, google_monitoring_uptime_check_config.healthz]
}

resource "google_monitoring_alert_policy" "lb_5xx_share" {
  display_name          = "paynow: load balancer 5xx share > 5% (page)"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "page"
  }

  conditions {
    display_name = "PaynowLb5xxShare"
    condition_prometheus_query_language {
      query               = <<-EOT
        sum(rate(loadbalancing_googleapis_com:https_request_count{monitored_resource="https_lb_rule",forwarding_rule_name="paynow-ingress-https",response_code_class="500"}[10m])) / sum(rate(loadbalancing_googleapis_com:https_request_count{monitored_resource="https_lb_rule",forwarding_rule_name="paynow-ingress-https"}[10m])) > 0.05
      EOT
      duration            = "300s"
      evaluation_interval = "60s"
      labels = {
        severity = "page"
      }
    }
  }

  documentation {
    content   = "More than 5% of webhook answers are 5xx, including the ones the load balancer gives itself when no region is healthy (no ingress log line is written then). RUNBOOK.md#failover."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "pipeline_stalled" {
  display_name          = "paynow: pipeline stalled, oldest unacked envelope > 10 min (page)"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "page"
  }

  conditions {
    display_name = "PaynowPipelineStalled"
    condition_prometheus_query_language {
      query               = <<-EOT
        max(pubsub_googleapis_com:subscription_oldest_unacked_message_age{monitored_resource="pubsub_subscription",subscription_id="paynow-events-pipeline"}) > 600
      EOT
      duration            = "300s"
      evaluation_interval = "60s"
      labels = {
        severity = "page"
      }
    }
  }

  documentation {
    content   = "Webhooks are accepted but not credited: the pipeline subscription holds an envelope older than 10 minutes. RUNBOOK.md#manual-move-the-pipeline."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "pipeline_lagging" {
  display_name          = "paynow: Dataflow system lag > 5 min (page)"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "page"
  }

  conditions {
    display_name = "PaynowPipelineLagging"
    condition_prometheus_query_language {
      query               = <<-EOT
        max by (job_name) (dataflow_googleapis_com:job_system_lag{monitored_resource="dataflow_job",job_name=~"paynow-ledger-.*"}) > 300
      EOT
      duration            = "600s"
      evaluation_interval = "60s"
      labels = {
        severity = "page"
      }
    }
  }

  documentation {
    content   = "A ledger job runs but falls behind. RUNBOOK.md#manual-move-the-pipeline."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "reconcile_failing" {
  display_name          = "paynow: reconcile job failing (ticket)"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels = {
    severity = "ticket"
  }

  conditions {
    display_name = "PaynowReconcileFailing"
    condition_prometheus_query_language {
      query               = <<-EOT
        sum(increase(run_googleapis_com:job_completed_execution_count{monitored_resource="cloud_run_job",job_name="paynow-reconcile",result="failed"}[2h])) >= 2
      EOT
      duration            = "0s"
      evaluation_interval = "60s"
      labels = {
        severity = "ticket"
      }
    }
  }

  documentation {
    content   = "The reconciler, the safety net for lost webhook deliveries, failed twice in 2 hours. RUNBOOK.md#reconciliation."
    mime_type = "text/markdown"
  }
  depends_on = [google_project_service.apis]
}
