"""The job graph builds for Dataflow offline: DataflowRunner with dry_run translates it, nothing is submitted."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from google.protobuf.json_format import MessageToDict

from pipeline.main import build_pipeline

PROJECT = "paynow-prod"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/paynow-events-pipeline"
DLQ_TOPIC = f"projects/{PROJECT}/topics/paynow-events-dlq"
IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/paynow/paynow-ledger-pipeline:test"
# DESIGN §3 step names; Dataflow's in-place --update matches steps by these labels, so they must not drift.
STEPS = ["ReadEnvelopes", "DecodeAndGate", "KeyByOrderingKey", "DedupeEventIds", "ResolveAccount",
         "ApplyToLedger", "CollectDeadLetters", "PublishDeadLetters"]


def dataflow_options(region: str, *extra: str) -> PipelineOptions:
    """What the Flex Template launcher passes: Beam's Dataflow flags plus the template parameters."""
    return PipelineOptions([
        "--runner=DataflowRunner", f"--project={PROJECT}", f"--region={region}",
        f"--temp_location=gs://{PROJECT}-dataflow/temp", f"--staging_location=gs://{PROJECT}-dataflow/staging",
        f"--sdk_container_image={IMAGE}", "--streaming", "--enable_streaming_engine",
        "--dry_run=True", "--no_auth",
        f"--subscription={SUBSCRIPTION}", f"--dlq_topic={DLQ_TOPIC}", *extra])


def translate(options: PipelineOptions, path: Path) -> dict[str, Any]:
    """Run the DataflowRunner translation without submission; write the job description to `path`."""
    result = build_pipeline(options).run()
    job = result.job
    description = {"job": json.loads(job.json()), "pipeline": MessageToDict(job.proto_pipeline)}
    path.write_text(json.dumps(description, indent=1, sort_keys=True))
    return description


@pytest.fixture
def job_file(tmp_path: Path, no_network: list[str]) -> Path:
    path = tmp_path / "dataflow_job.json"
    translate(dataflow_options("us-central1"), path)
    assert no_network == [], f"the translation tried to reach {no_network}"
    return path


def top_level_names(pipeline: dict[str, Any]) -> list[str]:
    transforms = pipeline["components"]["transforms"]
    roots = pipeline["rootTransformIds"]
    names = []
    for root in roots:
        names.extend(transforms[sub]["uniqueName"] for sub in transforms[root].get("subtransforms", []))
        names.append(transforms[root]["uniqueName"])
    return names


def test_job_description_is_written_and_streaming(job_file: Path) -> None:
    description = json.loads(job_file.read_text())
    assert description["job"]["type"] == "JOB_TYPE_STREAMING"
    assert description["job"]["name"]


def test_every_design_step_is_in_the_dataflow_graph_in_order(job_file: Path) -> None:
    names = top_level_names(json.loads(job_file.read_text())["pipeline"])
    assert [n for n in names if n in STEPS] == STEPS, names
    # On Dataflow the runner acks after its checkpoint: no ack-after-commit step, no local metrics server.
    assert "Acknowledge" not in names and "CollectDone" not in names
    assert "ServeMetrics" not in names


def test_pubsub_read_becomes_dataflow_native_read_of_the_subscription(tmp_path: Path,
                                                                      no_network: list[str]) -> None:
    result = build_pipeline(dataflow_options("europe-west1")).run()
    transforms = result.job.proto_pipeline.components.transforms
    reads = [t for t in transforms.values() if t.spec.urn == common_urns.composites.PUBSUB_READ.urn]
    assert len(reads) == 1
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(reads[0].spec.payload)
    assert payload.subscription == SUBSCRIPTION
    assert payload.with_attributes, "the gate needs the attributes (version, eventId, region)"
    assert no_network == []


def test_workers_run_the_flex_template_image(tmp_path: Path, no_network: list[str]) -> None:
    result = build_pipeline(dataflow_options("us-central1")).run()
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in result.job.proto_pipeline.components.environments.values()
              if env.urn == common_urns.environments.DOCKER.urn}
    assert images == {IMAGE}


def test_acking_read_is_refused_on_dataflow(no_network: list[str]) -> None:
    with pytest.raises(ValueError, match="read_mode"):
        build_pipeline(dataflow_options("us-central1", "--read_mode=acking"))


def test_the_offline_guard_refuses_google_hosts(no_network: list[str]) -> None:
    import socket

    with pytest.raises(AssertionError, match="offline"):
        socket.getaddrinfo("dataflow.googleapis.com", 443)
    assert no_network == ["dataflow.googleapis.com"]


def test_template_entry_point_launches_with_the_scripts_parameters(tmp_path: Path) -> None:
    """What the Flex Template launcher does: python templates/main.py --<each parameter of the run command>
    plus the Dataflow options it adds; here with dry_run, so the job is translated, not submitted."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(["bash", str(root / "scripts" / "flex-template.sh"), "run"], check=True, text=True,
                         capture_output=True, timeout=20,
                         env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "PROJECT": PROJECT, "TAG": "t1"})
    words = shlex.split(out.stdout)
    parameters = [f"--{words[i + 1]}" for i, word in enumerate(words) if word == "--parameters"]
    launcher = ["--runner=DataflowRunner", f"--project={PROJECT}", "--region=us-central1",
                f"--temp_location=gs://{PROJECT}-dataflow/temp", f"--staging_location=gs://{PROJECT}-dataflow/staging",
                "--dry_run=True", "--no_auth"]
    run = subprocess.run([sys.executable, str(root / "templates" / "main.py"), *launcher, *parameters],
                         text=True, capture_output=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in (run.stdout + run.stderr).splitlines() if line.startswith("{")]
    # The interface's readiness line (TEAM.md), here for the Dataflow-native read of the template's subscription.
    ready = [line for line in lines if line.get("message") == "pipeline ready"]
    assert ready and ready[0]["read"] == "native" and ready[0]["region"] == "us-central1", lines
