"""deploy/ Terraform checked offline (python-hcl2): regions, least privilege, Pub/Sub, Firestore, LB, alerts."""
from __future__ import annotations

import io
import json
import re
from typing import Any

import fastavro

from ops.topology import Topology
from schemas import codec, encode_envelope, envelope_from_payload

from .terraform import DEPLOY, block, load

REGIONS = {"us-central1", "europe-west1"}
ROOT = DEPLOY.parent

# DESIGN §7, spelled out: (grant resource type, role, the resource granted on). Nothing else, per account.
EXPECTED_ROLES: dict[str, set[tuple[str, str, str]]] = {
    "google_service_account.ingress": {
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher", "google_pubsub_topic.events"),
        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor",
         "google_secret_manager_secret.webhook_secrets"),
        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor",
         "google_secret_manager_secret.admin_token"),
    },
    "google_service_account.pipeline": {
        ("google_project_iam_member", "roles/dataflow.worker", "var.project_id"),
        ("google_project_iam_member", "roles/datastore.user", "var.project_id"),
        ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber", "google_pubsub_subscription.pipeline"),
        ("google_pubsub_subscription_iam_member", "roles/pubsub.viewer", "google_pubsub_subscription.pipeline"),
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher", "google_pubsub_topic.dlq"),
        ("google_storage_bucket_iam_member", "roles/storage.objectAdmin", "google_storage_bucket.dataflow"),
        ("google_artifact_registry_repository_iam_member", "roles/artifactregistry.reader",
         "google_artifact_registry_repository.paynow"),
    },
    # issue K: one reconciler (a Cloud Run job in the primary region), not per region
    "google_service_account.reconcile": {
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher", "google_pubsub_topic.events"),
        ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber", "google_pubsub_subscription.dlq_inspect"),
        ("google_project_iam_member", "roles/datastore.viewer", "var.project_id"),
        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor",
         "google_secret_manager_secret.paynow_api_key"),
        ("google_cloud_run_v2_job_iam_member", "roles/run.invoker", "google_cloud_run_v2_job.reconcile"),
    },
    "local.pubsub_service_agent_member": {
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher", "google_pubsub_topic.undeliverable"),
        ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber", "google_pubsub_subscription.pipeline"),
    },
}
TARGET_ATTRIBUTES = ("topic", "subscription", "secret_id", "bucket", "repository", "project", "name")
NOT_PER_REGION = {"reconcile"}  # service accounts of single-region jobs (deploy/reconcile.tf)
REF = re.compile(r"\$\{((?:google_\w+\.\w+)|(?:var\.\w+)|(?:local\.\w+))")


def grants() -> dict[str, set[tuple[str, str, str]]]:
    """Every IAM grant in deploy/, keyed by the account it is for."""
    found: dict[str, set[tuple[str, str, str]]] = {}
    for (kind, _name), body in load().resources.items():
        if not kind.endswith("_iam_member"):
            continue
        member = REF.search(body["member"])
        assert member, f"{kind}: member {body['member']} is not one of our accounts"
        target = next(body[a] for a in TARGET_ATTRIBUTES if a in body)
        found.setdefault(member.group(1), set()).add((kind, body["role"], REF.search(target).group(1)))
    return found


def container() -> dict[str, Any]:
    return block(block(load().resource("google_cloud_run_v2_service", "ingress"), "template"), "containers")


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


# --- files and regions -------------------------------------------------------------------------------------

def test_terraform_is_split_by_concern_and_parses() -> None:
    assert {"versions.tf", "variables.tf", "pubsub.tf", "firestore.tf", "secrets.tf", "iam.tf", "ingress.tf",
            "lb.tf", "monitoring.tf"} <= set(load().files)


def test_both_regions_are_deployed_from_one_image() -> None:
    config = load()
    assert set(config.default("regions")) == REGIONS
    assert {config.default("primary_region"), config.default("secondary_region")} == REGIONS
    for kind in ("google_cloud_run_v2_service", "google_compute_region_network_endpoint_group",
                 "google_service_account"):
        for name, body in config.of_type(kind).items():
            if kind == "google_service_account" and name in NOT_PER_REGION:
                continue
            assert body["for_each"] == "${var.regions}", f"{kind}.{name} is not per region"
    service = config.resource("google_cloud_run_v2_service", "ingress")
    assert service["location"] == "${each.key}"
    assert container()["image"] == "${var.ingress_image}"


def test_every_region_keeps_a_warm_instance() -> None:
    config = load()
    assert all(r["min_instances"] >= 1 for r in config.default("regions").values())
    assert "min_instances >= 1" in config.variables["regions"]["validation"][0]["condition"]
    scaling = block(block(config.resource("google_cloud_run_v2_service", "ingress"), "template"), "scaling")
    assert scaling["min_instance_count"] == "${each.value.min_instances}"


def test_service_account_ids_fit_for_every_region() -> None:
    for body in load().of_type("google_service_account").values():
        for region in REGIONS:
            account_id = body["account_id"].replace("${each.key}", region)
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account_id), account_id


# --- least privilege ---------------------------------------------------------------------------------------

def test_every_service_account_has_exactly_its_listed_roles() -> None:
    assert grants() == EXPECTED_ROLES


def test_per_region_grants_go_to_that_regions_own_account() -> None:
    for (kind, name), body in load().resources.items():
        if kind.endswith("_iam_member") and "google_service_account" in body["member"] \
                and not any(f"google_service_account.{n}." in body["member"] for n in NOT_PER_REGION):
            assert body["for_each"] == "${var.regions}", f"{kind}.{name}"
            assert "[each.key].email}" in body["member"], f"{kind}.{name} grants to another region's account"


def test_no_authoritative_or_primitive_grants() -> None:
    for (kind, name), body in load().resources.items():
        assert not kind.endswith(("_iam_binding", "_iam_policy")), f"{kind}.{name} would remove others' grants"
        if "role" in body:
            assert body["role"] not in ("roles/owner", "roles/editor", "roles/viewer"), f"{kind}.{name}"


def test_ingress_is_publish_only() -> None:
    roles = {role for _kind, role, _target in grants()["google_service_account.ingress"]}
    assert roles == {"roles/pubsub.publisher", "roles/secretmanager.secretAccessor"}
    config = load()
    assert block(config.resource("google_cloud_run_v2_service", "ingress"), "template")["service_account"] == \
        "${google_service_account.ingress[each.key].email}"


# --- Cloud Run ingress -------------------------------------------------------------------------------------

def test_ingress_gets_every_design_setting_with_secrets_from_secret_manager() -> None:
    env = env_of(container())
    design = {"REGION", "SERVICE_NAME", "LOG_LEVEL", "MULTI_REGION_ENABLED", "PRIMARY_REGION", "SECONDARY_REGION",
              "FAILOVER_ENABLED", "EVENT_SCHEMA_VERSION", "EVENT_SCHEMA_MIN_COMPATIBLE", "PAYNOW_WEBHOOK_SECRETS",
              "PUBSUB_TOPIC", "GOOGLE_CLOUD_PROJECT", "ADMIN_TOKEN"}
    assert design <= set(env)
    assert env["REGION"]["value"] == "${each.key}"
    assert env["EVENT_SCHEMA_VERSION"]["value"] == "3"
    for name in ("PAYNOW_WEBHOOK_SECRETS", "ADMIN_TOKEN"):
        assert "value" not in env[name], f"{name} must not be a plain value in the Terraform state"
        ref = block(block(env[name], "value_source"), "secret_key_ref")
        assert ref["version"] == "latest" and ref["secret"].startswith("${google_secret_manager_secret.")


def test_ingress_settings_the_code_reads_are_the_ones_set() -> None:
    """Every DESIGN setting Terraform passes is one ingress/settings.py actually reads (no typo'd names)."""
    settings = (ROOT / "ingress" / "settings.py").read_text()
    for name in env_of(container()):
        if name != "HOST":  # read by the ingress launcher (ingress/__main__.py), see deploy/README.md
            assert f'"{name}"' in settings, f"{name} is not read by ingress/settings.py"


def test_probes_use_the_ingress_health_endpoints() -> None:
    c = container()
    assert block(block(c, "readiness_probe"), "http_get")["path"] == "/readyz"
    assert block(block(c, "liveness_probe"), "http_get")["path"] == "/healthz"
    assert block(block(c, "startup_probe"), "http_get")["path"] == "/healthz"
    service = load().resource("google_cloud_run_v2_service", "ingress")
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"


def test_secrets_are_replicated_and_survive_adding_a_region() -> None:
    """Automatic replication: no location list that a new region would have to change (that replaces a secret)."""
    secrets = load().of_type("google_secret_manager_secret")
    assert set(secrets) == {"webhook_secrets", "admin_token", "paynow_api_key"}  # + the reconciler's (issue K)
    for name, body in secrets.items():
        assert set(block(body, "replication")) == {"auto"}, name
        assert block(body, "lifecycle")["prevent_destroy"] is True, name


# --- load balancer -----------------------------------------------------------------------------------------

def test_load_balancer_uses_serverless_negs_with_outlier_detection_not_health_checks() -> None:
    config = load()
    for neg in config.of_type("google_compute_region_network_endpoint_group").values():
        assert neg["network_endpoint_type"] == "SERVERLESS"
        assert block(neg, "cloud_run")["service"] == "${google_cloud_run_v2_service.ingress[each.key].name}"
    backend = config.resource("google_compute_backend_service", "ingress")
    assert "health_checks" not in backend  # the API refuses health checks on serverless NEG backends
    assert backend["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    outlier = block(backend, "outlier_detection")
    assert outlier["consecutive_gateway_failure"] >= 1 and outlier["max_ejection_percent"] <= 50
    assert block(backend, "dynamic")["backend"]["for_each"] == "${toset(local.serving_regions)}"
    retry = block(block(config.resource("google_compute_url_map", "ingress"), "default_route_action"),
                  "retry_policy")
    assert {"5xx", "connect-failure"} <= set(retry["retry_conditions"])
    rule = config.resource("google_compute_global_forwarding_rule", "ingress")
    assert rule["port_range"] == "443" and rule["load_balancing_scheme"] == "EXTERNAL_MANAGED"


# --- Pub/Sub -----------------------------------------------------------------------------------------------

def test_names_match_the_local_stack_topology() -> None:
    config, topo = load(), Topology()
    assert config.locals["topic_id"] == topo.topic_id
    assert config.locals["pipeline_subscription_id"] == topo.subscription_id
    assert config.locals["dlq_topic_id"] == topo.dlq_topic_id
    assert config.locals["dlq_subscription_id"] == topo.dlq_subscription_id


def test_pipeline_subscription_is_ordered_with_a_dead_letter_policy() -> None:
    sub = load().resource("google_pubsub_subscription", "pipeline")
    assert sub["topic"] == "${google_pubsub_topic.events.id}"
    assert sub["enable_message_ordering"] is True
    assert sub["ack_deadline_seconds"] == 60
    dead = block(sub, "dead_letter_policy")
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.undeliverable.id}"
    assert 5 <= dead["max_delivery_attempts"] <= 100
    assert block(sub, "expiration_policy")["ttl"] == ""


def test_dlq_topic_has_an_inspect_subscription() -> None:
    config = load()
    for sub_name, topic in (("dlq_inspect", "dlq"), ("undeliverable_inspect", "undeliverable")):
        sub = config.resource("google_pubsub_subscription", sub_name)
        assert sub["topic"] == f"${{google_pubsub_topic.{topic}.id}}"


def test_topic_has_no_schema_because_envelopes_are_single_object_encoded() -> None:
    """A topic schema with BINARY encoding expects a bare Avro datum; ours carries the C3 01 + fingerprint header."""
    assert "schema_settings" not in load().resource("google_pubsub_topic", "events")
    payload = json.dumps({"id": "evt-1", "event_type": "ON_ORDER_COMPLETED", "data": {"order": {
        "id": "o-1", "pretty_id": "P1", "customer": {"id": "c-1", "email": "a@b.c", "metadata": {"uid": "u-1"}},
        "lines": [{"product_id": "459935272365195264", "quantity": 1, "price": 100}]}}}).encode()
    data = encode_envelope(envelope_from_payload(payload, timestamp_ms=1_700_000_000_000, region="us-central1"))

    def reads_as_bare_datum(candidate: bytes) -> bool:
        try:
            datum = fastavro.schemaless_reader(io.BytesIO(candidate), codec.ENVELOPE_SCHEMAS[3], None)
        except Exception:
            return False
        return isinstance(datum, dict) and datum.get("eventId") == "evt-1"

    assert data[:2] == codec.MAGIC
    assert not reads_as_bare_datum(data)
    assert reads_as_bare_datum(data[codec.HEADER_LEN:])  # control: without the header it is what Pub/Sub wants


# --- Firestore ---------------------------------------------------------------------------------------------

def test_webhook_events_expire_through_a_ttl_policy() -> None:
    field = load().resource("google_firestore_field", "webhook_events_ttl")
    assert (field["collection"], field["field"]) == ("webhookEvents", "expiresAt")
    assert "ttl_config" in field


def test_firestore_rules_file_is_the_released_ruleset() -> None:
    config = load()
    files = block(block(config.resource("google_firebaserules_ruleset", "firestore"), "source"), "files")
    assert files["content"] == '${file("${path.module}/firestore.rules")}'
    assert config.resource("google_firebaserules_release", "firestore")["name"] == "cloud.firestore"
    assert (DEPLOY / "firestore.rules").exists()


# --- the ingress image -------------------------------------------------------------------------------------

def test_ingress_image_builds_from_repository_sources_and_runs_the_ingress() -> None:
    lines = [line.split(None, 1) for line in (DEPLOY / "ingress.Dockerfile").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for op, args in lines:
        if op == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert ["CMD", '["python", "-m", "ingress"]'] in lines
    assert ["FROM", "python:3.11-slim"] in lines
    build = (DEPLOY / "cloudbuild-ingress.yaml").read_text()
    assert '"--file", "deploy/ingress.Dockerfile"' in build


# --- references (what `terraform validate` would catch first) ----------------------------------------------

def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_every_reference_names_something_declared() -> None:
    config = load()
    bodies = [*config.resources.values(), *config.outputs.values(), *config.data.values(), config.locals]
    expressions = [e for body in bodies for text in strings(body) for e in re.findall(r"\$\{(.*?)\}", text)]
    assert expressions
    for expression in expressions:
        for kind, name in re.findall(r"(?<![\w.])(google_\w+)\.(\w+)", expression):
            assert (kind, name) in config.resources, expression
        for kind, name in re.findall(r"\bdata\.(google_\w+)\.(\w+)", expression):
            assert (kind, name) in config.data, expression
        for name in re.findall(r"\bvar\.(\w+)", expression):
            assert name in config.variables, expression
        for name in re.findall(r"\blocal\.(\w+)", expression):
            assert name in config.locals, expression


def test_each_is_used_only_in_resources_with_for_each() -> None:
    for (kind, name), body in load().resources.items():
        uses_each = any("each." in text for text in strings({k: v for k, v in body.items() if k != "dynamic"}))
        if uses_each:
            assert "for_each" in body, f"{kind}.{name}"


def test_per_region_references_index_per_region_resources() -> None:
    config = load()
    for (kind, name), body in config.resources.items():
        for ref_kind, ref_name in re.findall(r"(google_\w+)\.(\w+)\[each\.key\]", " ".join(strings(body))):
            assert config.resource(ref_kind, ref_name)["for_each"] == "${var.regions}", (kind, name, ref_name)
