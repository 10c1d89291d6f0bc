# Terraform and provider pins for the paynow-ledger deployment (one project, two regions).
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.20, < 8"
    }
    # Cloud Run readiness probes (the signal behind Cloud Run service health failover) are a preview
    # feature, so the two ingress services use the beta provider.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.20, < 8"
    }
  }

  # State lives in a bucket created once by hand (deploy/README.md, step 1).
  backend "gcs" {
    prefix = "paynow-ledger"
  }
}

provider "google" {
  project = var.project_id
}

provider "google-beta" {
  project = var.project_id
}
