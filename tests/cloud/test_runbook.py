"""RUNBOOK.md: every required procedure is there, and its commands match the tools and Terraform they drive."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ops.cli import build_parser

from .terraform import DEPLOY, load

ROOT = DEPLOY.parent
RUNBOOK = (ROOT / "RUNBOOK.md").read_text()
SCRIPT = (ROOT / "scripts" / "flex-template.sh").read_text()
VALUES = {"PROJECT": "paynow-prod", "PRIMARY": "us-central1", "SECONDARY": "europe-west1", "EVENT_ID": "evt-1",
          "CURRENT_TAG": "abc123", "PREVIOUS_TAG": "abc122", "R": "us-central1", "UID": "user-1",
          "CUSTOMER_ID": "459935272365195264"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings() -> list[str]:
    return [line.lstrip("#").strip() for line in RUNBOOK.splitlines() if line.startswith("#")]


def shell_commands() -> list[str]:
    """Commands of the ```sh blocks, continuation lines joined and $VARS filled in."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", RUNBOOK, re.DOTALL):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" # ")[0].strip()
            for name, value in VALUES.items():
                line = line.replace(f'"${name}"', value).replace(f"${name}", value)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


@pytest.mark.parametrize("section", ["Failover", "Automatic (what happens, nothing to do)",
                                     "Manual: force all webhooks to one region", "Rollback",
                                     "Fast (minutes): put every region back on the previous revision / template",
                                     "Gradual: canary one region, then the other", "DLQ replay drill",
                                     "Secret rotation", "Restoring the ledger", "Adding a region",
                                     "Upgrading minCompatible to 3", "Erasure"])
def test_every_required_procedure_has_a_section(section: str) -> None:
    assert section in headings()


def test_alert_documentation_links_point_at_existing_sections() -> None:
    anchors = {slug(h) for h in headings()}
    for name, body in load().of_type("google_monitoring_alert_policy").items():
        for anchor in re.findall(r"RUNBOOK\.md#([\w-]+)", body["documentation"][0]["content"]):
            assert anchor in anchors, (name, anchor)


def test_paynow_commands_parse_with_the_real_cli() -> None:
    commands = [c for c in shell_commands() if c.startswith("paynow ")]
    assert any(" dlq replay " in c and "--dry-run" in c for c in commands)
    assert any(" dlq list " in c for c in commands) and any(" dlq show " in c for c in commands)
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            pytest.fail(f"`{command}` is refused by ops/cli.py ({exc})")


def test_flex_template_invocations_use_real_actions_and_settings() -> None:
    settings = set(re.findall(r"(?:^|\s)([A-Z_]+)=\$\{\1", SCRIPT, re.MULTILINE))
    inline = re.findall(r"`([^`\n]*scripts/flex-template\.sh[^`\n]*)`", RUNBOOK)
    calls = [c for c in shell_commands() if "scripts/flex-template.sh" in c] + inline
    assert len(calls) > 10 and "TAG" in settings
    for call in calls:
        words = shlex.split(call)
        at = words.index("scripts/flex-template.sh")
        assert words[at + 1] in {"image", "build", "run", "update", "replace", "all"}, call
        for assignment in words[:at]:
            assert assignment.split("=")[0] in settings, (call, assignment)
        if words[at + 1] in {"run", "update", "replace"}:
            # The script refuses run/update without TAG (a local HEAD is rarely a template that was built).
            assert any(a.startswith("TAG=") for a in words[:at]), f"{call}: no TAG"


def test_settings_are_changed_in_tfvars_not_on_the_command_line() -> None:
    """A -var on the command line is undone by the next plain `terraform apply`; the runbook edits tfvars."""
    assert "-var=" not in RUNBOOK and "-var " not in RUNBOOK
    variables = set(load().variables)
    tfvars = re.findall(r"`(\w+) = [^`]+`", RUNBOOK)
    tfvars += [line.split("=")[0].strip() for hcl in re.findall(r"```hcl\n(.*?)```", RUNBOOK, re.DOTALL)
               for line in hcl.splitlines() if re.match(r"^\s*\w+\s*=", line)]
    assert {"serving_regions", "multi_region_enabled", "event_schema_min_compatible", "regions"} <= set(tfvars)
    assert set(tfvars) <= variables, set(tfvars) - variables


def test_resource_names_in_commands_are_the_deployed_ones() -> None:
    config = load()
    neg = config.resource("google_compute_region_network_endpoint_group", "ingress")["name"]
    assert neg == "paynow-ingress-${each.key}"
    assert "--network-endpoint-group=paynow-ingress-$SECONDARY" in RUNBOOK
    assert config.resource("google_compute_backend_service", "ingress")["name"] == "paynow-ingress"
    assert config.locals["ingress_service_name"] == "paynow-ingress"
    assert "undeliverable" not in RUNBOOK  # no Pub/Sub dead-letter topic with Dataflow (DESIGN §5)
    for secret in config.of_type("google_secret_manager_secret").values():
        assert secret["secret_id"].replace("${each.key}", "$TYPE") in RUNBOOK
    assert Path(ROOT / "ops" / "admin" / "catalog.py").read_text().count("def map_customer") == 1


def test_the_current_tag_comes_from_the_jobs_own_labels() -> None:
    """`gcloud dataflow jobs list` never returns labels (issue 22: every TAG=$CURRENT_TAG step aborted); the job's
    full record does, and scripts/flex-template.sh sets the label it is read from."""
    [line] = [c for c in shell_commands() if c.startswith("export CURRENT_TAG=")]
    assert "gcloud dataflow jobs describe" in line and "--full" in line and "labels.template_tag" in line
    assert "jobs list" not in line
    assert "template_tag=${TAG}" in SCRIPT


def test_restore_pauses_and_resumes_the_reconcile_schedule() -> None:
    """A reconcile run during a restore would re-publish what the half-restored ledger lacks."""
    section = RUNBOOK.split("\n## Restoring the ledger\n", 1)[1].split("\n## ", 1)[0]
    job = load().resource("google_cloud_scheduler_job", "reconcile")["name"]
    pause = section.index(f"gcloud scheduler jobs pause {job} --location=$PRIMARY")
    drain = section.index("gcloud dataflow jobs drain")
    seek = section.index("gcloud pubsub subscriptions seek")
    resume = section.index(f"gcloud scheduler jobs resume {job} --location=$PRIMARY")
    assert pause < drain < seek < resume


def test_drain_then_run_and_name_mappings_are_documented() -> None:
    assert "scripts/flex-template.sh replace" in RUNBOOK
    assert "TRANSFORM_NAME_MAPPINGS=" in RUNBOOK and "TRANSFORM_NAME_MAPPINGS" in SCRIPT
