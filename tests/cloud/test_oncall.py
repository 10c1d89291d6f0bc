"""The on-call can run every command RUNBOOK.md gives: each one is listed here with the permissions it needs, and
deploy/oncall.tf's custom role (or a resource-level grant to var.operators) holds every one of them.

A command added to the runbook fails test_every_runbook_command_is_listed until its permissions are written here;
a permission missing from the role fails test_the_oncall_role_has_every_permission_a_command_needs. Permission
names follow Google's IAM permissions reference; they cannot be validated offline (no IAM API here)."""
from __future__ import annotations

import re

from .terraform import DEPLOY, load
from .test_gcloud_commands import command_path, commands_in

ROOT = DEPLOY.parent
RUNBOOK = (ROOT / "RUNBOOK.md").read_text()

# gcloud command (its path in the command tree) -> permissions it needs.
GCLOUD: dict[str, set[str]] = {
    "auth application-default login": set(),  # local credentials only
    "config set": set(),  # local configuration only
    "logging read": {"logging.logEntries.list"},
    "dataflow jobs list": {"dataflow.jobs.list"},
    "dataflow jobs describe": {"dataflow.jobs.get"},
    "dataflow jobs drain": {"dataflow.jobs.cancel"},
    "beta dataflow metrics list": {"dataflow.metrics.get"},
    "compute backend-services describe": {"compute.backendServices.get"},
    "compute backend-services add-backend": {"compute.backendServices.get", "compute.backendServices.update",
                                             "compute.regionNetworkEndpointGroups.use"},
    "compute backend-services remove-backend": {"compute.backendServices.get", "compute.backendServices.update"},
    "run revisions list": {"run.revisions.list"},
    "run services describe": {"run.services.get"},
    "run services update": {"run.services.get", "run.services.update", "iam.serviceAccounts.actAs"},
    "run services update-traffic": {"run.services.get", "run.services.update"},
    "run deploy": {"run.services.get", "run.services.update", "iam.serviceAccounts.actAs"},
    "run jobs execute": {"run.jobs.run", "run.executions.get"},
    "secrets versions access": {"secretmanager.versions.access"},
    "secrets versions add": {"secretmanager.versions.add"},
    "secrets versions list": {"secretmanager.versions.list"},
    "secrets versions disable": {"secretmanager.versions.disable"},
    "secrets versions destroy": {"secretmanager.versions.destroy"},
    "secrets delete": {"secretmanager.secrets.delete"},
    "firestore backups list": {"datastore.backups.list"},
    "firestore databases restore": {"datastore.backups.restoreDatabase", "datastore.databases.create"},
    "firestore databases create": {"datastore.databases.create"},
    "firestore databases describe": {"datastore.databases.getMetadata"},
    "firestore databases update": {"datastore.databases.update"},
    "firestore databases delete": {"datastore.databases.delete"},
    "firestore export": {"datastore.databases.export", "storage.objects.create"},
    "firestore import": {"datastore.databases.import", "storage.objects.get"},
    "pubsub subscriptions seek": {"pubsub.subscriptions.consume"},
    "scheduler jobs pause": {"cloudscheduler.jobs.pause"},
    "scheduler jobs resume": {"cloudscheduler.jobs.enable"},
    "storage ls": {"storage.objects.list"},
}
# paynow subcommand -> permissions (the documents it reads and writes, what it publishes).
PAYNOW: dict[str, set[str]] = {
    "audit": {"datastore.entities.get", "datastore.entities.list"},
    "dlq": {"datastore.entities.get", "datastore.entities.list", "datastore.entities.update",
            "pubsub.topics.publish"},
    "seed": {"datastore.entities.create", "datastore.entities.update"},
    "credit": {"datastore.entities.get", "datastore.entities.create", "datastore.entities.update"},
    "erase": {"datastore.entities.get", "datastore.entities.list", "datastore.entities.update",
              "datastore.entities.delete", "pubsub.subscriptions.consume"},
    "reconcile": {"datastore.entities.get", "datastore.entities.list", "pubsub.topics.publish",
                  "secretmanager.versions.access"},
    "drill": set(),  # the local stack only
}
# scripts/flex-template.sh action -> permissions of the gcloud commands it runs (image: Cloud Build staging upload).
SCRIPT: dict[str, set[str]] = {
    "image": {"cloudbuild.builds.create", "storage.buckets.get", "storage.objects.create",
              "iam.serviceAccounts.actAs"},
    "build": {"cloudbuild.builds.create", "storage.buckets.get", "storage.objects.create",
              "iam.serviceAccounts.actAs"},
    "run": {"dataflow.jobs.list", "dataflow.jobs.get", "dataflow.jobs.create", "storage.objects.get",
            "iam.serviceAccounts.actAs"},
    "update": {"dataflow.jobs.list", "dataflow.jobs.get", "dataflow.jobs.updateContents", "storage.objects.get",
               "iam.serviceAccounts.actAs"},
    "replace": {"dataflow.jobs.list", "dataflow.jobs.get", "dataflow.jobs.cancel", "dataflow.jobs.create",
                "storage.objects.get", "iam.serviceAccounts.actAs"},
}
# Permissions given on one resource rather than by the project-level role: (permission, grant resources to operators).
RESOURCE_GRANTS = {
    "iam.serviceAccounts.actAs": ["google_service_account_iam_member.operators_act_as_pipeline",
                                  "google_service_account_iam_member.operators_act_as_builder",
                                  "google_service_account_iam_member.operators_act_as_ingress"],
    "storage.objects.create": ["google_storage_bucket_iam_member.operators_bucket"],  # sources, exports
    "storage.objects.get": ["google_storage_bucket_iam_member.operators_bucket",
                            "google_storage_bucket_iam_member.operators_templates"],
    "storage.objects.list": ["google_storage_bucket_iam_member.operators_templates"],
}
# Run by a project owner, not the on-call role (deploy/README.md): Terraform changes IAM itself.
NOT_ONCALL = {"terraform"}


def runbook_shell() -> str:
    return "\n".join(re.findall(r"```sh\n(.*?)```", RUNBOOK, re.DOTALL))


def gcloud_paths() -> set[str]:
    uses = commands_in(runbook_shell(), "RUNBOOK.md")
    for span in re.findall(r"(?<!`)`(gcloud [^`]+)`(?!`)", RUNBOOK):
        uses += commands_in(span, "RUNBOOK.md")
    return {" ".join(command_path(u.words)[0]) for u in uses}


def paynow_commands() -> set[str]:
    text = runbook_shell() + "\n" + "\n".join(re.findall(r"`(paynow [^`]+)`", RUNBOOK))
    return set(re.findall(r"(?:^|[\s(])paynow (\w+)", text, re.MULTILINE))


def script_actions() -> set[str]:
    return set(re.findall(r"scripts/flex-template\.sh (image|build|run|update|replace|all)\b", RUNBOOK))


def other_tools() -> set[str]:
    text = runbook_shell()
    return {m for m in re.findall(r"^\s*(terraform)\b", text, re.MULTILINE)}


def role_permissions() -> set[str]:
    role = load().resource("google_project_iam_custom_role", "oncall")
    assert role["permissions"] == "${local.oncall_permissions}"
    text = load().locals["oncall_permissions"]  # "${sort([...])}": python-hcl2 keeps a call as its text
    assert text.startswith("${sort([")
    return set(re.findall(r'"([\w.]+)"', text))


def test_every_runbook_command_is_listed() -> None:
    assert not gcloud_paths() - set(GCLOUD), f"list the permissions of {sorted(gcloud_paths() - set(GCLOUD))}"
    assert not paynow_commands() - set(PAYNOW), sorted(paynow_commands() - set(PAYNOW))
    assert not script_actions() - set(SCRIPT), sorted(script_actions() - set(SCRIPT))
    assert other_tools() <= NOT_ONCALL
    assert {"scheduler jobs pause", "dataflow jobs drain", "run jobs execute"} <= gcloud_paths()  # the control


def test_the_oncall_role_has_every_permission_a_command_needs() -> None:
    role = role_permissions()
    config = load()
    needed = {(f"gcloud {path}", p) for path in gcloud_paths() for p in GCLOUD[path]}
    needed |= {(f"paynow {name}", p) for name in paynow_commands() for p in PAYNOW[name]}
    needed |= {(f"flex-template.sh {action}", p) for action in script_actions() for p in SCRIPT[action]}
    missing = []
    for command, permission in sorted(needed):
        if permission in role:
            continue
        grants = RESOURCE_GRANTS.get(permission, [])
        ok = bool(grants) and all(tuple(g.split(".")) in config.resources for g in grants) and all(
            config.resources[tuple(g.split("."))]["member"] in ("${each.value}", "${each.value.member}")
            for g in grants)
        if not ok:
            missing.append(f"{command}: {permission}")
    assert not missing, "deploy/oncall.tf lacks:\n" + "\n".join(missing)


def test_the_role_is_granted_to_the_operators_and_holds_nothing_unexplained() -> None:
    grant = load().resource("google_project_iam_member", "operators_oncall")
    assert grant["role"] == "${google_project_iam_custom_role.oncall.id}"
    assert grant["for_each"] == "${toset(var.operators)}"
    used = set().union(*GCLOUD.values(), *PAYNOW.values(), *SCRIPT.values())
    # a few read companions of listed commands (describe before update, operation polling) are allowed on top
    companions = {"dataflow.messages.list", "run.revisions.get", "run.operations.get", "run.jobs.get",
                  "run.executions.list", "secretmanager.versions.get", "datastore.backups.get",
                  "datastore.databases.get", "datastore.operations.get", "datastore.operations.list",
                  "pubsub.subscriptions.get", "pubsub.topics.get", "cloudscheduler.jobs.get", "cloudbuild.builds.get",
                  "cloudbuild.builds.list"}
    assert role_permissions() - used <= companions, sorted(role_permissions() - used - companions)
    assert all(re.fullmatch(r"[a-z]+\.[a-zA-Z]+\.[a-zA-Z]+", p) for p in role_permissions())
