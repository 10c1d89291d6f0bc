"""Every deploy/*.tf checked against hashicorp/google's own schema (the committed snapshot), and `terraform fmt`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .schema_check import DEPLOY, check_files, check_text, snapshot

TERRAFORM = "/usr/local/bin/terraform"


def test_the_snapshot_is_the_pinned_provider() -> None:
    """versions.tf pins exactly the provider version the snapshot was extracted from, and nothing else."""
    versions = (DEPLOY / "versions.tf").read_text()
    pins = re.findall(r'source\s*=\s*"([^"]+)"\s*\n\s*version\s*=\s*"([^"]+)"', versions)
    assert pins == [("hashicorp/google", snapshot()["version"])], pins
    assert snapshot()["provider"] == "registry.terraform.io/hashicorp/google"


def test_every_tf_file_matches_the_provider_schema() -> None:
    errors = check_files(sorted(DEPLOY.glob("*.tf")))
    assert not errors, "\n".join(errors)


def test_the_cloud_run_fixes_are_in_the_schema() -> None:
    """The two arguments the ingress depends on exist in this provider version (absent in 6.x for the probe)."""
    service = snapshot()["resources"]["google_cloud_run_v2_service"]
    assert "invoker_iam_disabled" in service["attributes"]
    assert "readiness_probe" in service["blocks"]["template"]["blocks"]["containers"]["blocks"]


# --- the checker catches planted mistakes (the same kinds a reviewer or `terraform validate` would) ---------

PLANTED = '''
resource "google_compute_backend_service" "b" {
  name         = "x"
  timeout_secs = 30
  log_confg {
    enable = true
  }
}

resource "google_pubsub_topic" "t" {
  message_retention_duration = "600s"
}

resource "google_pubsub_subscription" "s" {
  name              = "s"
  topic             = "t"
  expiration_policy = { ttl = "" }
}

resource "google_cloud_run_v2_service" "r" {
  name     = "r"
  location = "l"
  template {
    containers {
      image = "i"
      readiness_probe {
        http_get = { path = "/readyz" }
      }
    }
  }
  template {
  }
}

resource "google_cloud_run_service_v3" "nope" {
  name = "n"
}
'''


def test_planted_mistakes_are_each_reported() -> None:
    errors = check_text(PLANTED)
    expected = [
        "planted.tf: google_compute_backend_service.b: unknown argument 'timeout_secs'",
        "planted.tf: google_compute_backend_service.b: unknown block 'log_confg'",
        "planted.tf: google_pubsub_topic.t: missing required argument 'name'",
        "planted.tf: google_pubsub_subscription.s: 'expiration_policy' is a block, written as an argument "
        "(use `expiration_policy { ... }`)",
        "planted.tf: google_cloud_run_v2_service.r: block 'template' may appear once, found 2 times",
        "planted.tf: google_cloud_run_v2_service.r.template.containers.readiness_probe: 'http_get' is a block, "
        "written as an argument (use `http_get { ... }`)",
        "planted.tf: google_cloud_run_service_v3.nope: unknown resource type 'google_cloud_run_service_v3' in "
        f"hashicorp/google {snapshot()['version']}",
    ]
    for line in expected:
        assert line in errors, f"not reported: {line}\nreported:\n" + "\n".join(errors)
    assert len(errors) == len(expected), "\n".join(errors)


def test_a_valid_resource_passes_and_dynamic_blocks_are_checked() -> None:
    good = '''
resource "google_compute_backend_service" "b" {
  name = "x"
  dynamic "backend" {
    for_each = var.groups
    content {
      group = backend.value
    }
  }
  lifecycle {
    ignore_changes = [description]
  }
}
'''
    assert check_text(good) == []
    bad = good.replace("group = backend.value", "groups = backend.value")
    where = "planted.tf: google_compute_backend_service.b.backend"
    assert check_text(bad) == [f"{where}: unknown argument 'groups'", f"{where}: missing required argument 'group'"]


# --- terraform fmt: runs offline, no providers needed ---------------------------------------------------------

def test_terraform_fmt_check_passes() -> None:
    terraform = TERRAFORM if os.path.exists(TERRAFORM) else shutil.which("terraform")
    if terraform is None:
        pytest.fail(f"terraform is not installed ({TERRAFORM}); `terraform fmt -check` cannot run")
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(DEPLOY)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"})
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"
