"""LedgerOptions: the flag list is the contract, and invalid values fail with the flag's name."""
from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.main import run
from pipeline.options import LedgerOptions, resolved_read_mode, validate

GOOD = ["--subscription", "projects/p/subscriptions/s", "--dlq_topic", "projects/p/topics/d", "--project", "p",
        "--region", "us-central1"]


def options(*extra: str) -> PipelineOptions:
    return PipelineOptions([*GOOD, *extra])


def test_flag_names_are_exactly_the_team_contract() -> None:
    assert LedgerOptions.flag_names() == [
        "subscription", "dlq_topic", "firestore_database", "min_compatible", "dedupe_ttl", "read_mode",
        "max_write_attempts", "product_refresh_seconds", "event_ttl_days", "metrics_port"]
    assert all(LedgerOptions.flag_help()[name] for name in LedgerOptions.flag_names())


def test_defaults() -> None:
    ledger = options().view_as(LedgerOptions)
    validate(options())
    assert (ledger.firestore_database, ledger.min_compatible, ledger.dedupe_ttl, ledger.read_mode,
            ledger.max_write_attempts, ledger.product_refresh_seconds, ledger.event_ttl_days,
            ledger.metrics_port) == ("(default)", 2, 3600, "auto", 5, 60, 30, 0)


@pytest.mark.parametrize(("extra", "flag"), [
    (["--subscription", "paynow-events-pipeline"], "--subscription"),
    (["--subscription", "projects/p/topics/t"], "--subscription"),
    (["--dlq_topic", "projects/p/subscriptions/s"], "--dlq_topic"),
    (["--min_compatible", "0"], "--min_compatible"),
    (["--min_compatible", "5"], "--min_compatible"),
    (["--dedupe_ttl", "0"], "--dedupe_ttl"),
    (["--read_mode", "fast"], "--read_mode"),
    (["--max_write_attempts", "0"], "--max_write_attempts"),
    (["--product_refresh_seconds", "-5"], "--product_refresh_seconds"),
    (["--event_ttl_days", "0"], "--event_ttl_days"),
    (["--metrics_port", "70000"], "--metrics_port"),
    (["--firestore_database", ""], "--firestore_database"),
    (["--runner", "DataflowRunner", "--read_mode", "acking"], "--read_mode"),
])
def test_invalid_values_name_the_flag(extra: list[str], flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        validate(options(*extra))


def test_project_is_required() -> None:
    with pytest.raises(ValueError, match="--project"):
        validate(PipelineOptions(GOOD[:4]))


def test_read_mode_auto_is_native_on_dataflow_and_acking_elsewhere() -> None:
    assert resolved_read_mode(options()) == "acking"
    assert resolved_read_mode(options("--runner", "DataflowRunner")) == "native"
    assert resolved_read_mode(options("--read_mode", "native")) == "native"


def test_run_prints_the_problem_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*GOOD, "--min_compatible", "9"]) == 2
    assert "--min_compatible" in capsys.readouterr().err


def test_local_runner_is_chosen_per_read_mode() -> None:
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.main import parse_options

    def runner(*extra: str) -> str:
        return str(parse_options([*GOOD, *extra]).view_as(StandardOptions).runner)

    assert runner() == "FnApiRunner"  # PeriodicImpulse + state: what DirectRunner falls back to without Prism
    assert runner("--read_mode", "native") == "BundleBasedDirectRunner"  # ReadFromPubSub + timers
    assert runner("--runner", "DataflowRunner") == "DataflowRunner"
    assert parse_options(GOOD).view_as(StandardOptions).streaming
