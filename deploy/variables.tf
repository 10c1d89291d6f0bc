# Inputs of the deployment; terraform.tfvars.example shows a complete set.

variable "project_id" {
  description = "Google Cloud project that holds everything."
  type        = string
}

variable "regions" {
  description = "Ingress regions and their Cloud Run scaling. Adding a region = adding an entry (RUNBOOK.md)."
  type = map(object({
    min_instances = number
    max_instances = number
  }))
  default = {
    "us-central1"  = { min_instances = 1, max_instances = 20 }
    "europe-west1" = { min_instances = 1, max_instances = 20 }
  }

  validation {
    # Service account ids are at most 30 characters: "pipe-" + region (iam.tf).
    condition     = alltrue([for r in keys(var.regions) : can(regex("^[a-z]+-[a-z]+[0-9]+$", r)) && length(r) <= 25])
    error_message = "Region keys are Google Cloud region names (e.g. europe-west1) of at most 25 characters."
  }

  validation {
    # Cloud Run service health needs at least one warm instance per region to compute health.
    condition     = alltrue([for r in values(var.regions) : r.min_instances >= 1 && r.max_instances >= r.min_instances])
    error_message = "Every region needs min_instances >= 1 (Cloud Run service health) and max_instances >= min_instances."
  }
}

variable "primary_region" {
  description = "PRIMARY_REGION of the ingress and the region of the primary Dataflow job."
  type        = string
  default     = "us-central1"
}

variable "secondary_region" {
  description = "SECONDARY_REGION of the ingress and the region of the standby Dataflow job."
  type        = string
  default     = "europe-west1"
}

variable "ingress_image" {
  description = "Container image of the ingress (python -m ingress), e.g. us-central1-docker.pkg.dev/P/paynow/paynow-ingress:TAG."
  type        = string
}

variable "multi_region_enabled" {
  description = "Per-region MULTI_REGION_ENABLED; false on a secondary region makes its /readyz fail (rollback switch)."
  type        = map(bool)
  default     = {}
}

variable "domain" {
  description = "Host name PayNow posts webhooks to; a Google-managed certificate is issued for it."
  type        = string
}

variable "firestore_location" {
  description = "Firestore location: nam5 (US multi-region) keeps the ledger next to the primary pipeline."
  type        = string
  default     = "nam5"
}

variable "event_schema_min_compatible" {
  description = "EVENT_SCHEMA_MIN_COMPATIBLE of the ingress (the pipeline's --min_compatible is set at launch)."
  type        = number
  default     = 2
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids that receive the four alerts."
  type        = list(string)
  default     = []
}

variable "log_level" {
  description = "LOG_LEVEL of the ingress."
  type        = string
  default     = "INFO"
}

variable "serving_regions" {
  description = "Regions whose NEG is attached to the load balancer; null = all of var.regions. Manual failover = one region, set in terraform.tfvars (RUNBOOK.md)."
  type        = list(string)
  default     = null
}

variable "operators" {
  description = "IAM members (e.g. group:paynow-oncall@example.com) who build images and launch or update the Dataflow jobs."
  type        = list(string)
  default     = []
}

variable "webhook_event_types" {
  description = "PayNow event types the store has a webhook subscription for. PayNow gives each subscription (one event type) its own secret: each type gets its own Secret Manager secret paynow-webhook-<TYPE> (deploy/secrets.tf), passed to the ingress as PAYNOW_WEBHOOK_SECRETS_<TYPE> and bound to that type."
  type        = list(string)
  # The types the ledger reads (schemas/paynow.py LEDGER_EVENTS); the other types are not subscribed to.
  default = ["ON_ORDER_COMPLETED", "ON_REFUND", "ON_CHARGEBACK", "ON_CHARGEBACK_CLOSED", "ON_SUBSCRIPTION_ACTIVATED",
  "ON_SUBSCRIPTION_RENEWED"]

  validation {
    # PayNow's WebhookEventType enum (shared/paynow/webhook-definitions.json; tests/cloud keeps this list equal to it).
    condition = length(var.webhook_event_types) > 0 && alltrue([for t in var.webhook_event_types : contains([
      "ON_ORDER_COMPLETED", "ON_REFUND", "ON_CHARGEBACK", "ON_CHARGEBACK_CLOSED", "ON_DELIVERY_ITEM_ADDED",
      "ON_DELIVERY_ITEM_ACTIVATED", "ON_DELIVERY_ITEM_USED", "ON_DELIVERY_ITEM_REVOKED", "ON_DELIVERY_ITEM_EXPIRED",
      "ON_DELIVERY_ITEM_RENEWED", "ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED", "ON_SUBSCRIPTION_CANCELED",
      "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT", "ON_CONNECTED_USER_REGISTERED", "ON_CONNECTED_USER_BECAME_PAYABLE",
      "ON_CONNECTED_USER_BECAME_UNPAYABLE", "ON_CONNECTED_USER_PAYOUT_CREATED", "ON_CONNECTED_USER_PAYOUT_COMPLETED",
      "ON_CONNECTED_USER_TRANSACTION_INSERTED", "ON_CONNECTED_USER_TRUST_STATUS_CHANGED", "ON_TRIAL_ACTIVATED",
      "ON_TRIAL_COMPLETED", "ON_TRIAL_CANCELED", "ON_PURCHASE_FOLLOW_UP_ATTEMPT_EMAIL_SENT",
      "ON_PURCHASE_FOLLOW_UP_ATTEMPT_SUCCEEDED", "ON_ABANDONED_CHECKOUT_RECOVERY_ATTEMPT_EMAIL_SENT",
      "ON_ABANDONED_CHECKOUT_RECOVERY_ATTEMPT_SUCCEEDED", "ON_PAYMENT_COMPLETED", "ON_PAYMENT_FAILED"
    ], t)])
    error_message = "Each entry is one of PayNow's event types (WebhookEventType in its webhook definitions), e.g. ON_ORDER_COMPLETED."
  }
}
