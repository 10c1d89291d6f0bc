"""deploy/ Terraform checked offline (python-hcl2): regions, least privilege, Pub/Sub, Firestore, LB, alerts."""
from __future__ import annotations

import io
import re
from typing import Any

import fastavro

from ingress import Settings
from ops.local.topology import Topology
from schemas import codec, deliveries, encode_envelope, envelope_from_payload

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
        # template specs: read only, the builder alone writes them (issue 22)
        ("google_storage_bucket_iam_member", "roles/storage.objectViewer", "google_storage_bucket.templates"),
        ("google_artifact_registry_repository_iam_member", "roles/artifactregistry.reader",
         "google_artifact_registry_repository.paynow"),
    },
    "google_service_account.builder": {
        ("google_artifact_registry_repository_iam_member", "roles/artifactregistry.writer",
         "google_artifact_registry_repository.paynow"),
        ("google_storage_bucket_iam_member", "roles/storage.objectViewer", "google_storage_bucket.dataflow"),
        ("google_project_iam_member", "roles/logging.logWriter", "var.project_id"),
        ("google_storage_bucket_iam_member", "roles/storage.objectAdmin", "google_storage_bucket.templates"),
    },
    # People who build images and launch the Flex Template jobs, and run every RUNBOOK.md command (deploy/oncall.tf).
    "var.operators": {
        ("google_project_iam_member", "roles/dataflow.developer", "var.project_id"),
        ("google_project_iam_member", "roles/cloudbuild.builds.editor", "var.project_id"),
        ("google_service_account_iam_member", "roles/iam.serviceAccountUser", "google_service_account.pipeline"),
        ("google_service_account_iam_member", "roles/iam.serviceAccountUser", "google_service_account.builder"),
        ("google_storage_bucket_iam_member", "roles/storage.objectAdmin", "google_storage_bucket.dataflow"),
        ("google_project_iam_member", "${google_project_iam_custom_role.oncall.id}", "var.project_id"),
        ("google_service_account_iam_member", "roles/iam.serviceAccountUser", "google_service_account.ingress"),
        ("google_storage_bucket_iam_member", "roles/storage.objectViewer", "google_storage_bucket.templates"),
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
}
TARGET_ATTRIBUTES = ("topic", "subscription", "secret_id", "bucket", "repository", "service_account_id", "project",
                     "name")
NOT_PER_REGION = {"builder", "reconcile"}  # one build account; the single-region reconcile job (deploy/reconcile.tf)
# Every Google Cloud region (https://cloud.google.com/compute/docs/regions-zones, Nov 2026): account ids
# derived from a region must fit IAM's 6-30 characters for each of them.
ALL_REGIONS = [
    "africa-south1", "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
    "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2", "australia-southeast1",
    "australia-southeast2", "europe-central2", "europe-north1", "europe-north2", "europe-southwest1",
    "europe-west1", "europe-west10", "europe-west12", "europe-west2", "europe-west3", "europe-west4",
    "europe-west6", "europe-west8", "europe-west9", "me-central1", "me-central2", "me-west1",
    "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1", "southamerica-east1",
    "southamerica-west1", "us-central1", "us-east1", "us-east4", "us-east5", "us-south1", "us-west1", "us-west2",
    "us-west3", "us-west4",
]
REF = re.compile(r"\$\{((?:google_\w+\.\w+)|(?:var\.\w+)|(?:local\.\w+))")


def grants() -> dict[str, set[tuple[str, str, str]]]:
    """Every IAM grant in deploy/, keyed by the account it is for."""
    found: dict[str, set[tuple[str, str, str]]] = {}
    for (kind, _name), body in load().resources.items():
        if not kind.endswith("_iam_member"):
            continue
        if body["member"] in ("${each.value}", "${each.value.member}"):
            assert "operator" in str(body["for_each"]), f"{kind}.{_name}: members from for_each must be operators"
            account = "var.operators"
        else:
            member = REF.search(body["member"])
            assert member, f"{kind}: member {body['member']} is not one of our accounts"
            account = member.group(1)
        target = next(body[a] for a in TARGET_ATTRIBUTES if a in body)
        found.setdefault(account, set()).add((kind, body["role"], REF.search(target).group(1)))
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
    assert any("min_instances >= 1" in v["condition"] for v in config.variables["regions"]["validation"])
    scaling = block(block(config.resource("google_cloud_run_v2_service", "ingress"), "template"), "scaling")
    assert scaling["min_instance_count"] == "${each.value.min_instances}"


def test_service_account_ids_fit_for_every_region() -> None:
    """IAM: account_id is 6-30 characters, [a-z][a-z0-9-]*[a-z0-9] (ids over 30 made `apply` fail)."""
    config = load()
    for body in config.of_type("google_service_account").values():
        for region in ALL_REGIONS:
            account_id = body["account_id"].replace("${each.key}", region)
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account_id), account_id
    # The launch script builds the worker account's address from the same rule.
    script = (ROOT / "scripts" / "flex-template.sh").read_text()
    pipeline_id = config.resource("google_service_account", "pipeline")["account_id"].replace("${each.key}",
                                                                                             "${REGION}")
    assert f'SERVICE_ACCOUNT="{pipeline_id}@${{PROJECT}}.iam.gserviceaccount.com"' in script
    builder_id = config.resource("google_service_account", "builder")["account_id"]
    assert f"serviceAccounts/{builder_id}@" in script


def test_region_validation_accepts_every_region_and_keeps_ids_short() -> None:
    [condition] = [v["condition"] for v in load().variables["regions"]["validation"] if "regex(" in v["condition"]]
    pattern = re.search(r'regex\("([^"]+)"', condition).group(1)
    limit = int(re.search(r"length\(r\) <= (\d+)", condition).group(1))
    assert all(re.search(pattern, r) and len(r) <= limit for r in ALL_REGIONS)
    longest_prefix = max(len(b["account_id"].split("${")[0]) for b in load().of_type("google_service_account").values()
                         if "${each.key}" in b["account_id"])
    assert longest_prefix + limit <= 30


def test_service_accounts_wait_for_the_apis_they_need() -> None:
    config = load()
    apis = set(config.resource("google_project_service", "apis")["for_each"].removeprefix("${toset(")
               .removesuffix(")}").strip("[]").replace('"', "").replace(",", " ").split())
    assert {"iam.googleapis.com", "cloudresourcemanager.googleapis.com", "run.googleapis.com",
            "dataflow.googleapis.com", "cloudbuild.googleapis.com"} <= apis, apis
    for name, body in config.of_type("google_service_account").items():
        assert "${google_project_service.apis}" in body.get("depends_on", []), name


# --- least privilege ---------------------------------------------------------------------------------------

def test_every_service_account_has_exactly_its_listed_roles() -> None:
    assert grants() == EXPECTED_ROLES


def test_per_region_grants_go_to_that_regions_own_account() -> None:
    for (kind, name), body in load().resources.items():
        if kind.endswith("_iam_member") and re.search(r"google_service_account\.(ingress|pipeline)\b", body["member"]):
            if body["for_each"] == "${var.regions}":
                assert "[each.key].email}" in body["member"], f"{kind}.{name} grants to another region's account"
            else:  # region x webhook subscription (the ingress reads each subscription's own secret)
                assert "setproduct(keys(var.regions), var.webhook_event_types)" in body["for_each"], f"{kind}.{name}"
                assert "[each.value.region].email}" in body["member"], f"{kind}.{name}"


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
              "FAILOVER_ENABLED", "EVENT_SCHEMA_VERSION", "EVENT_SCHEMA_MIN_COMPATIBLE", "PUBSUB_TOPIC",
              "GOOGLE_CLOUD_PROJECT", "ADMIN_TOKEN", "FORWARDED_HOPS"}
    assert design <= set(env)
    assert "PAYNOW_WEBHOOK_SECRETS" not in env and "TRUSTED_PROXIES" not in env
    assert env["REGION"]["value"] == "${each.key}"
    assert env["EVENT_SCHEMA_VERSION"]["value"] == "4"
    assert env["FORWARDED_HOPS"]["value"] == "2"  # Google's LB appends "<client>, <LB address>"
    per_subscription = block(container(), "dynamic")["env"]
    assert per_subscription["for_each"] == "${google_secret_manager_secret.webhook_secrets}"
    assert block(per_subscription, "content")["name"] == "PAYNOW_WEBHOOK_SECRETS_${env.key}"
    for name, variable in (("PAYNOW_WEBHOOK_SECRETS_<TYPE>", block(per_subscription, "content")),
                           ("ADMIN_TOKEN", env["ADMIN_TOKEN"])):
        assert "value" not in variable, f"{name} must not be a plain value in the Terraform state"
        ref = block(block(variable, "value_source"), "secret_key_ref")
        assert ref["version"] == "latest" and ref["secret"].startswith(("${google_secret_manager_secret.",
                                                                          "${env.value.secret_id"))


def test_one_secret_per_subscription_for_paynow_event_types_only() -> None:
    """Every default event type is one of PayNow's, and the variable's validation list is PayNow's whole enum."""
    config = load()
    secret = config.resource("google_secret_manager_secret", "webhook_secrets")
    assert secret["for_each"] == "${toset(var.webhook_event_types)}"
    assert secret["secret_id"] == "paynow-webhook-${each.key}"
    variable = config.variables["webhook_event_types"]
    enum = deliveries.event_type_enum()
    assert set(variable["default"]) <= set(enum) and "ON_ORDER_COMPLETED" in variable["default"]
    condition = block(variable, "validation")["condition"]
    assert re.findall(r'"(ON_[A-Z_]+)"', condition) == enum
    for event_type in variable["default"]:
        Settings.from_env({f"PAYNOW_WEBHOOK_SECRETS_{event_type}": "s"})  # the ingress takes each variable


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


def test_webhooks_are_not_refused_by_the_cloud_run_invoker_check() -> None:
    """PayNow sends no Google credentials: with the invoker check on and no roles/run.invoker grant, Cloud Run
    answers every webhook 403. The check is off; the service is reachable only through the load balancer."""
    config = load()
    service = config.resource("google_cloud_run_v2_service", "ingress")
    assert service["invoker_iam_disabled"] is True
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert not [k for k in config.resources if k[0].startswith("google_cloud_run_v2_service_iam")]


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
    matcher = block(config.resource("google_compute_url_map", "ingress"), "path_matcher")
    retry = block(block(block(matcher, "path_rule"), "route_action"), "retry_policy")
    assert {"5xx", "connect-failure"} <= set(retry["retry_conditions"])
    rule = config.resource("google_compute_global_forwarding_rule", "ingress")
    assert rule["port_range"] == "443" and rule["load_balancing_scheme"] == "EXTERNAL_MANAGED"


def test_only_the_webhook_paths_reach_cloud_run_through_the_load_balancer() -> None:
    """Issue G: /admin/* and /metrics are not routed; everything but the public paths gets a 404 from the LB."""
    config = load()
    url_map = config.resource("google_compute_url_map", "ingress")
    [host_rule] = url_map["host_rule"]
    [matcher] = url_map["path_matcher"]
    assert host_rule["hosts"] == ["*"] and host_rule["path_matcher"] == matcher["name"]
    [rule] = matcher["path_rule"]
    paths = config.locals["public_paths"] if rule["paths"] == "${local.public_paths}" else rule["paths"]
    from ingress.openapi import WEBHOOK_PATHS

    assert sorted(paths) == sorted([*WEBHOOK_PATHS, "/healthz"])
    assert not [p for p in paths if p.startswith(("/admin", "/metrics")) or "*" in p]
    for default in (url_map, matcher):
        abort = block(block(block(default, "default_route_action"), "fault_injection_policy"), "abort")
        assert abort["http_status"] == 404 and abort["percentage"] == 100


# --- Pub/Sub -----------------------------------------------------------------------------------------------

def test_names_match_the_local_stack_topology() -> None:
    config, topo = load(), Topology()
    assert config.locals["topic_id"] == topo.topic_id
    assert config.locals["pipeline_subscription_id"] == topo.subscription_id
    assert config.locals["dlq_topic_id"] == topo.dlq_topic_id
    assert config.locals["dlq_subscription_id"] == topo.dlq_subscription_id


def test_pipeline_subscription_is_ordered_without_pubsub_dead_lettering() -> None:
    """DESIGN §5: no dead_letter_policy / retry_policy on the subscription Dataflow reads (unsupported there)."""
    sub = load().resource("google_pubsub_subscription", "pipeline")
    assert sub["topic"] == "${google_pubsub_topic.events.id}"
    assert sub["enable_message_ordering"] is True
    assert sub["ack_deadline_seconds"] == 60
    assert "dead_letter_policy" not in sub and "retry_policy" not in sub
    assert block(sub, "expiration_policy")["ttl"] == ""


def test_dlq_topic_has_an_inspect_subscription() -> None:
    config = load()
    for sub_name, topic in (("dlq_inspect", "dlq"),):
        sub = config.resource("google_pubsub_subscription", sub_name)
        assert sub["topic"] == f"${{google_pubsub_topic.{topic}.id}}"


def test_topic_has_no_schema_because_envelopes_are_single_object_encoded() -> None:
    """A topic schema with BINARY encoding expects a bare Avro datum; ours carries the C3 01 + fingerprint header."""
    assert "schema_settings" not in load().resource("google_pubsub_topic", "events")
    payload = deliveries.encode(deliveries.order_completed(
        "evt-1", "o-1", "c-1", [deliveries.order_line("1", "459935272365195264")], uid="u-1"))
    data = encode_envelope(envelope_from_payload(payload, timestamp_ms=1_700_000_000_000, region="us-central1"))

    def reads_as_bare_datum(candidate: bytes) -> bool:
        try:
            schema = codec.ENVELOPE_SCHEMAS[codec.CURRENT_VERSION]
            datum = fastavro.schemaless_reader(io.BytesIO(candidate), schema, None)
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


def test_the_ledger_can_be_restored_from_pitr_and_backups() -> None:
    """Phase 7B: point-in-time recovery on, daily and weekly backup schedules, a restore procedure."""
    config = load()
    database = config.resource("google_firestore_database", "ledger")
    assert database["point_in_time_recovery_enablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert database["delete_protection_state"] == "DELETE_PROTECTION_ENABLED"
    schedules = config.of_type("google_firestore_backup_schedule")
    assert {"daily_recurrence", "weekly_recurrence"} <= {k for s in schedules.values() for k in s}
    for schedule in schedules.values():
        assert schedule["database"] == "${google_firestore_database.ledger.name}"
    runbook = (ROOT / "RUNBOOK.md").read_text()
    assert "## Restoring the ledger" in runbook
    for step in ("gcloud firestore databases restore", "--snapshot-time=", "gcloud pubsub subscriptions seek",
                 "paynow audit --project \"$PROJECT\" --database ledger-restore"):
        assert step in runbook, step


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
    [base] = [args for op, args in lines if op == "FROM"]
    assert base.startswith("python:3.11-slim@sha256:")  # pinned by digest (tests/cloud/test_supply_chain.py)
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
