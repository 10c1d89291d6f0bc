"""The first `terraform apply` on an empty project, in order: APIs, inputs, images, secret values, no create races.

Each rule here is a way the first apply failed (issue 22): a resource whose API was never enabled
(SERVICE_DISABLED), a variable the example tfvars did not set, an image or secret value no step produced, and
resources created before what they need (an alert policy before its log-based metric is visible, a certificate
before the Compute API).
"""
from __future__ import annotations

import re
from typing import Any

import hcl2

from .terraform import DEPLOY, load

ROOT = DEPLOY.parent
DEPLOY_README = (DEPLOY / "README.md").read_text()

# The API each resource type is created through (the type's page in the provider docs names it; the REST host of
# the resource's `projects.*` collection). A new resource type fails test_every_resource_type_has_its_api until it
# is added here, so its API cannot be forgotten.
RESOURCE_API = {
    "google_artifact_registry_repository": "artifactregistry.googleapis.com",
    "google_artifact_registry_repository_iam_member": "artifactregistry.googleapis.com",
    "google_cloud_run_v2_job": "run.googleapis.com",
    "google_cloud_run_v2_job_iam_member": "run.googleapis.com",
    "google_cloud_run_v2_service": "run.googleapis.com",
    "google_cloud_scheduler_job": "cloudscheduler.googleapis.com",
    "google_compute_backend_service": "compute.googleapis.com",
    "google_compute_firewall": "compute.googleapis.com",
    "google_compute_global_address": "compute.googleapis.com",
    "google_compute_global_forwarding_rule": "compute.googleapis.com",
    "google_compute_managed_ssl_certificate": "compute.googleapis.com",
    "google_compute_network": "compute.googleapis.com",
    "google_compute_region_network_endpoint_group": "compute.googleapis.com",
    "google_compute_security_policy": "compute.googleapis.com",
    "google_compute_ssl_policy": "compute.googleapis.com",
    "google_compute_subnetwork": "compute.googleapis.com",
    "google_compute_target_https_proxy": "compute.googleapis.com",
    "google_compute_url_map": "compute.googleapis.com",
    "google_firebaserules_release": "firebaserules.googleapis.com",
    "google_firebaserules_ruleset": "firebaserules.googleapis.com",
    "google_firestore_backup_schedule": "firestore.googleapis.com",
    "google_firestore_database": "firestore.googleapis.com",
    "google_firestore_field": "firestore.googleapis.com",
    "google_firestore_index": "firestore.googleapis.com",
    "google_logging_metric": "logging.googleapis.com",
    "google_logging_project_exclusion": "logging.googleapis.com",
    "google_monitoring_alert_policy": "monitoring.googleapis.com",
    "google_monitoring_dashboard": "monitoring.googleapis.com",
    "google_monitoring_uptime_check_config": "monitoring.googleapis.com",
    "google_project_iam_custom_role": "iam.googleapis.com",
    "google_project_iam_member": "cloudresourcemanager.googleapis.com",
    "google_project_service": "serviceusage.googleapis.com",
    "google_pubsub_subscription": "pubsub.googleapis.com",
    "google_pubsub_subscription_iam_member": "pubsub.googleapis.com",
    "google_pubsub_topic": "pubsub.googleapis.com",
    "google_pubsub_topic_iam_member": "pubsub.googleapis.com",
    "google_secret_manager_secret": "secretmanager.googleapis.com",
    "google_secret_manager_secret_iam_member": "secretmanager.googleapis.com",
    "google_service_account": "iam.googleapis.com",
    "google_service_account_iam_member": "iam.googleapis.com",
    "google_storage_bucket": "storage.googleapis.com",
    "google_storage_bucket_iam_member": "storage.googleapis.com",
}
# What the deploy steps use besides Terraform's resources: the Dataflow jobs (scripts/flex-template.sh) and the
# image builds (gcloud builds submit).
STEP_APIS = {"dataflow.googleapis.com", "cloudbuild.googleapis.com"}
# Enabled in every new project (it is the API that enables the others).
ALWAYS_ON = {"serviceusage.googleapis.com"}
APIS = "google_project_service.apis"


def enabled_apis() -> set[str]:
    for_each = load().resource("google_project_service", "apis")["for_each"]
    return set(re.findall(r'"([a-z0-9.-]+\.googleapis\.com)"', for_each))


def references(body: Any) -> set[str]:
    """Every resource a body refers to, implicitly (`${google_x.y...}`) or in depends_on."""
    return {f"{k}.{n}" for k, n in re.findall(r"(?<![\w.])(google_\w+)\.(\w+)", repr(body))}


def test_every_resource_type_has_its_api() -> None:
    used = {kind for kind, _ in load().resources}
    assert used <= set(RESOURCE_API), f"add the API of {sorted(used - set(RESOURCE_API))} to RESOURCE_API"


def test_main_tf_enables_every_api_a_resource_or_a_deploy_step_needs() -> None:
    needed = {RESOURCE_API[kind] for kind, _ in load().resources} | STEP_APIS
    missing = needed - ALWAYS_ON - enabled_apis()
    assert not missing, f"deploy/main.tf does not enable {sorted(missing)} (the first apply fails SERVICE_DISABLED)"


def test_every_resource_waits_for_the_apis() -> None:
    """Directly or through what it refers to, each resource is created after google_project_service.apis."""
    config = load()
    graph = {f"{k}.{n}": references(body) - {f"{k}.{n}"} for (k, n), body in config.resources.items()}
    reaches: dict[str, bool] = {APIS: True}

    def waits(node: str, seen: frozenset[str] = frozenset()) -> bool:
        if node not in reaches:
            reaches[node] = any(waits(dep, seen | {node}) for dep in graph.get(node, set()) if dep not in seen)
        return reaches[node]

    orphans = sorted(node for node in graph if node != APIS and not waits(node))
    assert not orphans, f"created before their API is enabled: {orphans} (add depends_on = [{APIS}])"


def test_every_variable_without_a_default_is_in_the_example_tfvars() -> None:
    with (DEPLOY / "terraform.tfvars.example").open() as handle:
        example = set(hcl2.load(handle)) - {"__comments__"}
    config = load()
    required = {name for name, body in config.variables.items() if "default" not in body}
    assert {"project_id", "domain", "ingress_image", "reconcile_image", "paynow_store_id"} <= required
    assert required <= example, f"terraform.tfvars.example lacks {sorted(required - example)}"
    assert example <= set(config.variables), f"not variables: {sorted(example - set(config.variables))}"


def deploy_steps() -> str:
    """The ```sh block of deploy/README.md's "Deploy" section."""
    section = DEPLOY_README.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    [steps] = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return steps


def test_every_image_variable_is_built_by_a_deploy_step() -> None:
    """Each *_image variable has a Cloud Build config building its Dockerfile, and the steps submit that config."""
    steps = deploy_steps()
    for variable in (v for v in load().variables if v.endswith("_image")):
        name = variable.removesuffix("_image")
        dockerfile = DEPLOY / f"{name}.Dockerfile"
        config = DEPLOY / f"cloudbuild-{name}.yaml"
        assert dockerfile.exists() and config.exists(), variable
        assert f'"--file", "deploy/{name}.Dockerfile"' in config.read_text(), config.name
        loop = re.search(r"for IMAGE in ([\w ]+); do\n(.*?)\ndone", steps, re.DOTALL)
        submitted = (name in loop.group(1).split() and "--config=deploy/cloudbuild-$IMAGE.yaml" in loop.group(2)) \
            if loop else f"--config=deploy/cloudbuild-{name}.yaml" in steps
        assert submitted, f"no deploy step builds {variable}"
        assert f"paynow-{name}:$TAG" in steps or ("paynow-$IMAGE:$TAG" in steps and loop), variable


def test_every_secret_gets_a_value_before_the_services_start() -> None:
    """A Cloud Run service or job reading `latest` of a secret with no version fails to start: every secret is
    created by the first targeted apply and given a version before the full apply."""
    steps = deploy_steps()
    first_full_apply = steps.index("terraform -chdir=deploy apply\n")
    targeted = steps[:first_full_apply]
    for name, secret in load().of_type("google_secret_manager_secret").items():
        assert f"-target=google_secret_manager_secret.{name}" in targeted, name
        add = f"gcloud secrets versions add {secret['secret_id'].replace('${each.key}', '$TYPE')} --data-file=-"
        assert add in targeted, f"no step adds a version of {secret['secret_id']} before the full apply"


def test_alert_policies_on_log_based_metrics_do_not_race_their_metric() -> None:
    """Provider 8.7.0: a policy created right after its log-based metric fails "Cannot find metric(s)". PromQL
    conditions skip that validation (disable_metric_validation) and still wait for the metric (depends_on);
    threshold conditions, which cannot skip it, may not read log-based metrics."""
    config = load()
    metrics = {f"google_logging_metric.{n}": "logging_googleapis_com:user_" + b["name"].replace("/", "_")
               for n, b in config.of_type("google_logging_metric").items()}
    for name, policy in config.of_type("google_monitoring_alert_policy").items():
        for condition in policy["conditions"]:
            for promql in condition.get("condition_prometheus_query_language", []):
                read = {ref for ref, series in metrics.items() if series in config.render(promql["query"])}
                if read:
                    assert promql.get("disable_metric_validation") is True, name
                    assert {f"${{{r}}}" for r in read} <= set(policy.get("depends_on", [])), (name, read)
            for threshold in condition.get("condition_threshold", []):
                assert "logging.googleapis.com/user/" not in threshold["filter"], name


def test_the_top_level_readme_links_the_deploy_steps_instead_of_copying_them() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    assert "deploy/README.md#deploy" in section
    assert "```" not in section and "terraform" not in section.replace("Terraform", "")
