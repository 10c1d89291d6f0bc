# The Dataflow workers' network: one subnet per region with Private Google Access, so workers without external IP
# addresses reach Pub/Sub, Firestore, Artifact Registry and Cloud Storage (the only services the pipeline calls).
# scripts/flex-template.sh launches each job on its region's subnet with --disable-public-ips.

variable "dataflow_subnet_ranges" {
  description = "Primary IPv4 range of the Dataflow subnet of each region in var.regions (a new region needs an entry)."
  type        = map(string)
  default = {
    "us-central1"  = "10.10.0.0/20"
    "europe-west1" = "10.20.0.0/20"
  }
}

resource "google_compute_network" "dataflow" {
  name                    = "paynow-dataflow"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

resource "google_compute_subnetwork" "dataflow" {
  for_each                 = var.regions
  name                     = "paynow-dataflow-${each.key}"
  region                   = each.key
  network                  = google_compute_network.dataflow.id
  ip_cidr_range            = var.dataflow_subnet_ranges[each.key]
  private_ip_google_access = true # no external IPs: Google APIs through Private Google Access
}

# Dataflow workers exchange data with each other on TCP 12345-12346 (Dataflow's network documentation); a new
# network has no rule allowing it. Workers carry the network tag "dataflow".
resource "google_compute_firewall" "dataflow_workers" {
  name        = "paynow-dataflow-workers"
  network     = google_compute_network.dataflow.id
  direction   = "INGRESS"
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]
  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }
}
