"""The Flex Template artefacts agree with the pipeline: metadata = flags, one Beam pin, a complete launch script."""
from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.options import LedgerOptions

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
SCRIPT = ROOT / "scripts" / "flex-template.sh"


def ledger_flags() -> dict[str, argparse.Action]:
    """The pipeline's own flags, read from the parser LedgerOptions builds (Beam's flags excluded)."""
    parser = argparse.ArgumentParser(add_help=False)
    LedgerOptions._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions}


def metadata() -> dict[str, Any]:
    return json.loads((TEMPLATES / "metadata.json").read_text())


def setup_beam_version() -> str:
    match = re.search(r'^BEAM_VERSION\s*=\s*"([^"]+)"', (ROOT / "setup.py").read_text(), re.MULTILINE)
    assert match, "setup.py must pin Beam once in BEAM_VERSION"
    return match.group(1)


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (TEMPLATES / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dry_run(command: str, **env: str) -> list[list[str]]:
    """The gcloud commands the script would run, each split into words."""
    out = subprocess.run(["bash", str(SCRIPT), command], check=True, capture_output=True, text=True, timeout=20,
                         env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "PROJECT": "paynow-prod", "TAG": "t1", **env})
    return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def flag_values(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == flag]


def launches(commands: list[list[str]]) -> list[list[str]]:
    return [c for c in commands if c[:4] == ["gcloud", "dataflow", "flex-template", "run"]]


def template_checks(commands: list[list[str]]) -> list[list[str]]:
    return [c for c in commands if c[:4] == ["gcloud", "storage", "objects", "describe"]]


# --- metadata.json ---------------------------------------------------------------------------------------------

def test_metadata_parameters_are_exactly_the_pipeline_flags_in_order() -> None:
    names = [p["name"] for p in metadata()["parameters"]]
    assert names == list(ledger_flags())


def test_metadata_is_a_streaming_template() -> None:
    meta = metadata()
    assert meta["streaming"] is True
    assert meta["name"] and meta["description"]


@pytest.mark.parametrize("parameter", metadata()["parameters"], ids=lambda p: p["name"])
def test_each_parameter_is_documented_and_validated(parameter: dict[str, Any]) -> None:
    assert set(parameter) == {"name", "label", "helpText", "isOptional", "regexes"}
    assert parameter["label"].strip() and len(parameter["helpText"]) > 20
    assert isinstance(parameter["isOptional"], bool)
    assert parameter["regexes"] and all(re.compile(r) for r in parameter["regexes"])
    flag = ledger_flags()[parameter["name"]]
    # A flag without a default is required on the template, and a default must pass the template's own regex.
    assert parameter["isOptional"] is (flag.default is not None)
    if flag.default is not None:
        assert all(re.fullmatch(r, str(flag.default)) for r in parameter["regexes"]), flag.default


def pipeline_accepts(name: str, value: str) -> bool:
    """The pipeline's own verdict (pipeline.options.validate) on one flag value."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import validate

    try:
        validate(PipelineOptions(["--subscription=projects/p/subscriptions/s", "--dlq_topic=projects/p/topics/t",
                                  "--project=p", f"--{name}={value}"]))
    except (ValueError, SystemExit):
        return False
    return True


INTEGER_PROBES = ["-1", "0", "1", "2", "3", "4", "9", "10", "99", "1024", "65535", "65536", "99999", "100000"]


@pytest.mark.parametrize("name", [n for n, a in ledger_flags().items() if a.type is int])
def test_integer_regexes_accept_nothing_the_pipeline_refuses(name: str) -> None:
    """A value the template accepts must start the job: the regex may be stricter than validate(), never looser."""
    [regex] = {p["name"]: p["regexes"] for p in metadata()["parameters"]}[name]
    accepted = [v for v in INTEGER_PROBES if re.fullmatch(regex, v)]
    assert accepted, name
    for value in accepted:
        assert pipeline_accepts(name, value), f"--{name}={value} passes the template regex but the pipeline refuses it"


def test_metrics_port_regex_is_exactly_the_tcp_port_range() -> None:
    regexes = {p["name"]: p["regexes"][0] for p in metadata()["parameters"]}
    ports = [str(n) for n in range(0, 70000)]
    assert [p for p in ports if re.fullmatch(regexes["metrics_port"], p)] == [str(n) for n in range(0, 65536)]
    assert pipeline_accepts("metrics_port", "65535") and not pipeline_accepts("metrics_port", "65536")


def test_firestore_database_regex_follows_firestores_id_rule() -> None:
    """gcloud firestore databases restore --help (SDK 528): "4-63 characters. Valid characters are /[a-z][0-9]-/
    with first character a letter and the last a letter or a number" (or "(default)")."""
    regex = {p["name"]: p["regexes"][0] for p in metadata()["parameters"]}["firestore_database"]
    for good in ("(default)", "ledg", "ledger-restore-1", "a" * 63):
        assert re.fullmatch(regex, good), good
    for bad in ("led", "a" * 64, "1abc", "ledger-", "Ledger", "led_ger", ""):
        assert not re.fullmatch(regex, bad), bad


def test_regexes_refuse_what_the_pipeline_refuses_on_dataflow() -> None:
    regexes = {p["name"]: p["regexes"][0] for p in metadata()["parameters"]}
    assert re.fullmatch(regexes["subscription"], "projects/p/subscriptions/paynow-events-pipeline")
    assert not re.fullmatch(regexes["subscription"], "paynow-events-pipeline")
    assert not re.fullmatch(regexes["dlq_topic"], "projects/p/subscriptions/x")
    assert not re.fullmatch(regexes["read_mode"], "acking")


def test_min_compatible_accepts_exactly_the_codecs_versions() -> None:
    """1..CURRENT_VERSION, derived from the codec: a template frozen at v3 could never be raised to 4 (issue 22)."""
    from schemas.codec import CURRENT_VERSION

    regex = {p["name"]: p["regexes"][0] for p in metadata()["parameters"]}["min_compatible"]
    accepted = [n for n in range(-1, 100) if re.fullmatch(regex, str(n))]
    assert accepted == list(range(1, CURRENT_VERSION + 1)), accepted
    assert all(pipeline_accepts("min_compatible", str(n)) for n in accepted)
    assert not pipeline_accepts("min_compatible", str(CURRENT_VERSION + 1))
    help_text = {p["name"]: p["helpText"] for p in metadata()["parameters"]}["min_compatible"]
    assert f"1 to {CURRENT_VERSION}" in help_text


# --- Dockerfile ------------------------------------------------------------------------------------------------

def test_dockerfile_beam_sdk_image_matches_setup_pin() -> None:
    images = [args.split()[0] for op, args in dockerfile() if op == "FROM"]
    sdk = [image for image in images if image.startswith("apache/beam_python")]
    assert [i.split("@")[0] for i in sdk] == [f"apache/beam_python3.11_sdk:{setup_beam_version()}"]


def test_dockerfile_launcher_and_sdk_share_the_python_version() -> None:
    images = [args.split()[0] for op, args in dockerfile() if op == "FROM"]
    launcher = [i for i in images if i.startswith("gcr.io/dataflow-templates-base/")]
    assert [i.split("/")[-1].split("-")[0] for i in launcher] == ["python311"]
    assert 'python_requires=">=3.11"' in (ROOT / "setup.py").read_text()


def test_dockerfile_copies_the_launcher_and_runs_the_beam_boot() -> None:
    ops = dockerfile()
    copies = [args for op, args in ops if op == "COPY" and args.startswith("--from=")]
    assert any("/opt/google/dataflow/python_template_launcher" in c for c in copies)
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in ops


def test_dockerfile_copy_sources_exist_and_the_template_entry_point_is_copied() -> None:
    workdir = ""
    copied: dict[str, str] = {}
    env: dict[str, str] = {}
    for op, args in dockerfile():
        if op == "ARG" and args.startswith("WORKDIR="):
            workdir = args.split("=", 1)[1]
        elif op == "COPY" and not args.startswith("--from="):
            *sources, dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY source {source} missing from the build context"
                target = dest if dest.startswith("/") else f"{workdir}/{dest}"
                copied[target.rstrip("/").removesuffix("/.")] = source
        elif op == "ENV":
            name, value = args.split("=", 1)
            env[name] = value.strip('"').replace("${WORKDIR}", workdir)
    assert copied[env["FLEX_TEMPLATE_PYTHON_PY_FILE"]] == "templates/main.py"
    # The package is installed in the image (which is also the worker image): nothing is staged at launch.
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in env and "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in env
    for package in ("schemas", "pipeline"):
        assert package in copied.values()


def test_template_entry_point_calls_the_pipeline_launcher() -> None:
    tree = ast.parse((TEMPLATES / "main.py").read_text())
    imports = [(n.module, [a.name for a in n.names]) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert ("pipeline.main", ["run"]) in imports
    from pipeline.main import run

    assert callable(run)


def test_cloudbuild_builds_the_template_dockerfile_from_the_repo_root() -> None:
    config = yaml.safe_load((TEMPLATES / "cloudbuild.yaml").read_text())
    args = config["steps"][0]["args"]
    assert args[args.index("--file") + 1] == "templates/Dockerfile" and args[-1] == "."
    assert config["images"] == ["${_IMAGE}"]


# --- scripts/flex-template.sh --------------------------------------------------------------------------------

def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=10)


def test_run_and_update_need_an_explicit_tag_and_check_the_template_exists() -> None:
    """No TAG guessed from the local HEAD: mid-incident that is rarely a template that was built."""
    for action in ("run", "update"):
        result = subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=20,
                                env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "PROJECT": "paynow-prod"})
        assert result.returncode != 0 and "set TAG to a built template" in result.stderr, result.stderr
    commands = dry_run("run")
    [check], [launch] = template_checks(commands), launches(commands)
    assert commands.index(check) < commands.index(launch)
    assert check[4] == flag_values(launch, "--template-file-gcs-location")[0]


def test_run_passes_every_template_parameter_once_with_a_valid_value() -> None:
    [words] = launches(dry_run("run"))
    pairs = [value.split("=", 1) for value in flag_values(words, "--parameters")]
    given = dict(pairs)
    assert len(given) == len(pairs), "a parameter is given twice"
    regexes = {p["name"]: p["regexes"] for p in metadata()["parameters"]}
    # Beam's own options that the template needs besides the pipeline's flags.
    assert set(given) == set(regexes) | {"sdk_container_image", "sdk_harness_log_level_overrides"}
    # DEBUG: the per-event lines the log-based metrics read (deploy/README.md "Cost": why not INFO yet)
    assert json.loads(given["sdk_harness_log_level_overrides"]) == {"pipeline": "DEBUG"}
    for name, value in given.items():
        assert all(re.fullmatch(r, value) for r in regexes.get(name, [".+"])), (name, value)


def test_build_and_run_use_one_image_and_one_template_file() -> None:
    commands = dry_run("all")
    image_cmd, [run_cmd] = commands[0], launches(commands)
    assert image_cmd[:3] == ["gcloud", "builds", "submit"]
    substitutions = dict(pair.split("=", 1) for pair in flag_values(image_cmd, "--substitutions")[0].split(","))
    image, template = substitutions["_IMAGE"], substitutions["_TEMPLATE"]
    # The spec is written inside the Cloud Build, as the builder (the only writer of the templates bucket).
    config = yaml.safe_load((TEMPLATES / "cloudbuild.yaml").read_text())
    [build_step] = [step["args"] for step in config["steps"] if step.get("entrypoint") == "gcloud"]
    assert build_step[:4] == ["dataflow", "flex-template", "build", "${_TEMPLATE}"]
    assert flag_values(build_step, "--image") == ["${_IMAGE}"]
    assert flag_values(build_step, "--metadata-file") == ["templates/metadata.json"]
    assert flag_values(build_step, "--sdk-language") == ["PYTHON"]
    assert [s["args"][:2] for s in config["steps"]].index(["push", "${_IMAGE}"]) < config["steps"].index(
        next(s for s in config["steps"] if s.get("entrypoint") == "gcloud"))
    assert template == flag_values(run_cmd, "--template-file-gcs-location")[0]
    assert template.startswith("gs://paynow-prod-templates/")
    assert f"sdk_container_image={image}" in flag_values(run_cmd, "--parameters")
    assert image.endswith(":t1")
    # Built as the build account deploy/iam.tf grants, from a source archive in the bucket it may read.
    assert flag_values(image_cmd, "--service-account") == [
        "projects/paynow-prod/serviceAccounts/paynow-builder@paynow-prod.iam.gserviceaccount.com"]
    assert flag_values(image_cmd, "--gcs-source-staging-dir")[0].startswith("gs://paynow-prod-dataflow/")


def test_standby_job_runs_in_its_region_with_its_own_service_account() -> None:
    [words] = launches(dry_run("update", REGION="europe-west1", ROLE="standby"))
    assert "--update" in words
    assert flag_values(words, "--region") == ["europe-west1"]
    account = "pipe-europe-west1@paynow-prod.iam.gserviceaccount.com"  # deploy/iam.tf account_id
    assert flag_values(words, "--service-account-email") == [account]
    assert words[4] == "paynow-ledger-europe-west1"


# --- the running job's settings survive an update; drain-then-run; renamed steps -----------------------------

STUB_GCLOUD = """#!/bin/bash
printf '%s\\n' "$*" >> "$GCLOUD_LOG"
case "$*" in
  "dataflow jobs list "*) echo "${STUB_JOB_ID-2026-12-03_01_02_03-42}" ;;
  "dataflow jobs describe "*"labels.min_compatible"*) echo "${STUB_MIN_COMPATIBLE-}" ;;
  "dataflow jobs describe "*"currentState"*) echo JOB_STATE_DRAINED ;;
  "storage objects describe "*) [ -z "${STUB_NO_TEMPLATE-}" ] || exit 1; echo paynow-ledger-t1.json ;;
esac
"""


def with_stub_gcloud(tmp_path: Path, command: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the script for real against a stand-in gcloud that answers the job queries and records every call."""
    (tmp_path / "gcloud").write_text(STUB_GCLOUD)
    (tmp_path / "gcloud").chmod(0o755)
    log = tmp_path / "calls.log"
    result = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=30,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin", "PROJECT": "paynow-prod", "TAG": "t1",
                                 "GCLOUD_LOG": str(log), **env})
    return result, log.read_text().splitlines() if log.exists() else []


def launch_parameters(call: str) -> dict[str, str]:
    words = shlex.split(call)
    return dict(v.split("=", 1) for v in flag_values(words, "--parameters"))


def test_update_keeps_the_running_jobs_min_compatible_unless_told(tmp_path: Path) -> None:
    """Issue 22: `update` sent min_compatible=2 whatever the job ran with, silently undoing a raise to 3."""
    result, calls = with_stub_gcloud(tmp_path, "update", STUB_MIN_COMPATIBLE="3")
    assert result.returncode == 0, result.stderr
    [describe] = [c for c in calls if c.startswith("dataflow jobs describe")]
    assert "--full" in describe and "labels.min_compatible" in describe
    [launch] = [c for c in calls if c.startswith("dataflow flex-template run")]
    assert launch_parameters(launch)["min_compatible"] == "3" and "--update" in launch
    assert "min_compatible=3" in flag_values(shlex.split(launch), "--additional-user-labels")[0]
    # told otherwise: the explicit value wins and the job is not asked
    told = tmp_path / "told"
    told.mkdir()
    result, calls = with_stub_gcloud(told, "update", STUB_MIN_COMPATIBLE="3", MIN_COMPATIBLE="2")
    [launch] = [c for c in calls if c.startswith("dataflow flex-template run")]
    assert launch_parameters(launch)["min_compatible"] == "2"
    assert not [c for c in calls if c.startswith("dataflow jobs describe")]


def test_update_refuses_to_guess_when_the_job_has_no_min_compatible_label(tmp_path: Path) -> None:
    result, calls = with_stub_gcloud(tmp_path, "update", STUB_MIN_COMPATIBLE="")
    assert result.returncode != 0 and "set MIN_COMPATIBLE explicitly" in result.stderr
    assert not [c for c in calls if c.startswith("dataflow flex-template run")]
    result, calls = with_stub_gcloud(tmp_path, "update", STUB_JOB_ID="")
    assert result.returncode != 0 and "start one with run" in result.stderr


def test_run_takes_the_newest_jobs_value_and_two_for_a_first_launch(tmp_path: Path) -> None:
    _, calls = with_stub_gcloud(tmp_path, "run", STUB_MIN_COMPATIBLE="3")
    assert any(c.startswith("dataflow jobs list") and "--status all" in c for c in calls)
    [launch] = [c for c in calls if c.startswith("dataflow flex-template run")]
    assert launch_parameters(launch)["min_compatible"] == "3" and "--update" not in launch
    first = tmp_path / "first"
    first.mkdir()
    _, calls = with_stub_gcloud(first, "run", STUB_JOB_ID="")
    [launch] = [c for c in calls if c.startswith("dataflow flex-template run")]
    assert launch_parameters(launch)["min_compatible"] == "2"


def test_replace_drains_waits_for_drained_then_starts_a_new_job(tmp_path: Path) -> None:
    result, calls = with_stub_gcloud(tmp_path, "replace", STUB_MIN_COMPATIBLE="3")
    assert result.returncode == 0, result.stderr
    kinds = [" ".join(c.split()[:3]) for c in calls]
    drain, state = kinds.index("dataflow jobs drain"), calls.index(next(c for c in calls if "currentState" in c))
    launch = kinds.index("dataflow flex-template run")
    assert drain < state < launch
    assert kinds.index("storage objects describe") < drain  # no drain when the new template does not exist
    assert "2026-12-03_01_02_03-42" in calls[drain]
    assert "--update" not in calls[launch] and launch_parameters(calls[launch])["min_compatible"] == "3"


def test_replace_never_drains_when_the_new_template_is_missing(tmp_path: Path) -> None:
    result, calls = with_stub_gcloud(tmp_path, "replace", STUB_MIN_COMPATIBLE="3", STUB_NO_TEMPLATE="1")
    assert result.returncode != 0
    assert not [c for c in calls if c.startswith(("dataflow jobs drain", "dataflow flex-template run"))]


def test_transform_name_mappings_go_to_the_update_only(tmp_path: Path) -> None:
    mappings = '{"ApplyToLedger":"ApplyToLedgerV2"}'
    [update] = launches(dry_run("update", TRANSFORM_NAME_MAPPINGS=mappings))
    assert flag_values(update, "--transform-name-mappings") == [mappings]
    [plain] = launches(dry_run("update"))
    assert "--transform-name-mappings" not in plain
    [run] = launches(dry_run("run", TRANSFORM_NAME_MAPPINGS=mappings))
    assert "--transform-name-mappings" not in run
