# Terraform and provider pins for the paynow-ledger deployment (one project, two regions).
#
# One provider, one version: deploy/schema/google-provider.json is hashicorp/google 8.7.0's own schema for every
# type used here, and tests/cloud/test_provider_schema.py checks each .tf against it offline. 8.7.0 has the Cloud
# Run v2 readiness_probe block (6.x does not); bumping = regenerating the snapshot (deploy/README.md,
# "Provider pin") and committing the .terraform.lock.hcl that `terraform init` writes.
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "8.7.0"
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
