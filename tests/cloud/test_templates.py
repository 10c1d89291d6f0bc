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
    assert re.fullmatch(regexes["min_compatible"], "3") and not re.fullmatch(regexes["min_compatible"], "4")


# --- Dockerfile ------------------------------------------------------------------------------------------------

def test_dockerfile_beam_sdk_image_matches_setup_pin() -> None:
    images = [args.split()[0] for op, args in dockerfile() if op == "FROM"]
    sdk = [image for image in images if image.startswith("apache/beam_python")]
    assert sdk == [f"apache/beam_python3.11_sdk:{setup_beam_version()}"]


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
    check, launch = dry_run("run")
    assert check[:4] == ["gcloud", "storage", "objects", "describe"]
    assert check[4] == flag_values(launch, "--template-file-gcs-location")[0]


def test_run_passes_every_template_parameter_once_with_a_valid_value() -> None:
    [words] = dry_run("run")[1:]
    assert words[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    pairs = [value.split("=", 1) for value in flag_values(words, "--parameters")]
    given = dict(pairs)
    assert len(given) == len(pairs), "a parameter is given twice"
    regexes = {p["name"]: p["regexes"] for p in metadata()["parameters"]}
    # Beam's own options that the template needs besides the pipeline's flags.
    assert set(given) == set(regexes) | {"sdk_container_image", "sdk_harness_log_level_overrides"}
    assert json.loads(given["sdk_harness_log_level_overrides"]) == {"pipeline": "DEBUG"}
    for name, value in given.items():
        assert all(re.fullmatch(r, value) for r in regexes.get(name, [".+"])), (name, value)


def test_build_and_run_use_one_image_and_one_template_file() -> None:
    image_cmd, build_cmd, _check, run_cmd = dry_run("all")
    substitution = flag_values(image_cmd, "--substitutions")[0]
    image = substitution.removeprefix("_IMAGE=")
    assert flag_values(build_cmd, "--image") == [image]
    assert flag_values(build_cmd, "--metadata-file") == ["templates/metadata.json"]
    assert flag_values(build_cmd, "--sdk-language") == ["PYTHON"]
    assert build_cmd[4] == flag_values(run_cmd, "--template-file-gcs-location")[0]
    assert f"sdk_container_image={image}" in flag_values(run_cmd, "--parameters")
    assert image.endswith(":t1")
    # Built as the build account deploy/iam.tf grants, from a source archive in the bucket it may read.
    assert flag_values(image_cmd, "--service-account") == [
        "projects/paynow-prod/serviceAccounts/paynow-builder@paynow-prod.iam.gserviceaccount.com"]
    assert flag_values(image_cmd, "--gcs-source-staging-dir")[0].startswith("gs://paynow-prod-dataflow/")


def test_standby_job_runs_in_its_region_with_its_own_service_account() -> None:
    [words] = dry_run("update", REGION="europe-west1", ROLE="standby")[1:]
    assert "--update" in words
    assert flag_values(words, "--region") == ["europe-west1"]
    account = "pipe-europe-west1@paynow-prod.iam.gserviceaccount.com"  # deploy/iam.tf account_id
    assert flag_values(words, "--service-account-email") == [account]
    assert words[4] == "paynow-ledger-europe-west1"
