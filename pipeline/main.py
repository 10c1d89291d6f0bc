"""Assemble the ledger pipeline graph (`build_pipeline`) and launch it (`run`)."""
from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.pvalue import DoOutputsTuple, PBegin, PCollection

from pipeline.accounts import ResolveAccount
from pipeline.dead_letters import PublishDeadLetters
from pipeline.dedupe import DedupeEventIds, dedupe_id
from pipeline.firestore_transport import FirestoreConfig
from pipeline.gate import DecodeAndGate
from pipeline.local import recycle
from pipeline.local.acking_read import AckingRead, Acknowledge, Release, hand_back
from pipeline.local.dedupe import ClaimingDedupe
from pipeline.local.runner import collect_less_often, eager_monitoring_infos, without_state_cache
from pipeline.model import Event, Message
from pipeline.observability import configure_logging, log, serve_metrics
from pipeline.options import LedgerOptions, resolved_read_mode, validate, worker_region
from pipeline.pubsub_io import NativeRead, log_ready
from pipeline.sink import ApplyToLedger

ACKING_LOCAL_RUNNER = "FnApiRunner"
NATIVE_LOCAL_RUNNER = "BundleBasedDirectRunner"
SinkFactory = Callable[[FirestoreConfig], beam.PTransform[PCollection[Event], DoOutputsTuple]]


def firestore_config(options: PipelineOptions) -> FirestoreConfig:
    ledger = options.view_as(LedgerOptions)
    return FirestoreConfig(project=options.view_as(GoogleCloudOptions).project,
                           release_transient=resolved_read_mode(options) == "acking",
                           database=ledger.firestore_database, region=worker_region(options),
                           max_write_attempts=ledger.max_write_attempts,
                           product_refresh_seconds=ledger.product_refresh_seconds,
                           event_ttl_days=ledger.event_ttl_days)


def _output(outputs: DoOutputsTuple, tag: str) -> PCollection[Message] | None:
    """A tagged output if the step declares it (a sink factory's stand-in may not release anything)."""
    try:
        return outputs[tag]
    except (ValueError, KeyError, AttributeError):
        return None


def key_by_event_id(event: Event) -> tuple[str, Event]:
    """The dedupe's key: what it remembers (the eventId, or a replay's id), so each key's state is one entry that
    its timer clears. Ordering keys are a small fixed set (schemas.ordering_key): keyed by them, one key's state
    would hold a share of every id seen within the TTL, rewritten on each event, and serialise its events."""
    return dedupe_id(event), event


class _ServeMetrics(beam.DoFn):
    """Pass-through that starts the Prometheus endpoint in each worker process (setup runs there)."""

    def __init__(self, port: int) -> None:
        self._port = port

    def setup(self) -> None:
        serve_metrics(self._port)

    def process(self, element: object) -> object:
        yield element


def build_pipeline(options: PipelineOptions, *, read: beam.PTransform[PBegin, PCollection[Message]] | None = None,
                   sink: SinkFactory = ApplyToLedger) -> beam.Pipeline:
    """The whole graph, not run. `read` replaces ReadEnvelopes (tests); `sink` replaces ApplyToLedger (bench)."""
    validate(options)
    ledger = options.view_as(LedgerOptions)
    region = worker_region(options)
    acking = resolved_read_mode(options) == "acking"
    config = firestore_config(options)

    p = beam.Pipeline(options=options)
    if read is None:
        read = AckingRead(ledger.subscription, region) if acking else NativeRead(ledger.subscription)
    messages = p | "ReadEnvelopes" >> read
    if ledger.metrics_port > 0:
        messages = messages | "ServeMetrics" >> beam.ParDo(
            _ServeMetrics(ledger.metrics_port))
    gated = messages | "DecodeAndGate" >> DecodeAndGate(ledger.min_compatible, region)
    dedupe = (ClaimingDedupe(ledger.subscription, ledger.dedupe_ttl, region) if acking
              else DedupeEventIds(ledger.dedupe_ttl, region))
    deduped = (gated.valid
               | "KeyByOrderingKey" >> beam.Map(  # the label Dataflow's update matches; the key is the event id
                   key_by_event_id).with_output_types(tuple[str, Any])
               | "DedupeEventIds" >> dedupe)
    resolved = deduped.unique | "ResolveAccount" >> ResolveAccount(config)
    applied = resolved.resolved | "ApplyToLedger" >> sink(config)
    dead_letters = {"Gate": gated.dlq, "Resolve": resolved.dlq, "Apply": applied.dlq}
    if not acking:
        flatten = beam.Flatten()
        dead_letters = {"All": tuple(dead_letters.values()) | "CollectDeadLetters" >> flatten}
    # The acking graph keeps one branch per source instead of a Flatten: FnApiRunner never schedules a Flatten
    # fed both by the unbounded pull stage and by a stage after the stateful dedupe, so its elements would sit.
    unpublished = functools.partial(hand_back, ledger.subscription) if acking else None
    dead = dead_letters | "PublishDeadLetters" >> PublishDeadLetters(ledger.dlq_topic, config, unpublished)
    if acking:
        # DESIGN §3: acknowledged only once durable (committed, dead-lettered, found committed); everything else
        # is handed back for redelivery. The dedupe's claims are settled by the first, forgotten by the second.
        ({"Duplicates": deduped.duplicate, "Committed": applied.committed, **dead}
         | "Acknowledge" >> Acknowledge(ledger.subscription))
        released = {"InFlight": deduped.in_flight, "ResolveUnavailable": resolved.release,
                    "ApplyUnavailable": _output(applied, "release")}
        ({name: pcoll for name, pcoll in released.items() if pcoll is not None}
         | "ReleaseForRedelivery" >> Release(ledger.subscription, region))
    return p


def parse_options(argv: Sequence[str] | None) -> PipelineOptions:
    """Streaming options from the command line (the workers import the installed package, no main session)."""
    options = PipelineOptions(list(argv) if argv is not None else sys.argv[1:])
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    if standard.runner in (None, "DirectRunner"):
        # What DirectRunner would pick for each graph after trying Prism first (a binary download; no network
        # here): FnApiRunner for the acking graph, the bundle-based runner for ReadFromPubSub + timers.
        standard.runner = ACKING_LOCAL_RUNNER if resolved_read_mode(options) == "acking" else NATIVE_LOCAL_RUNNER
    return options


def run(argv: Sequence[str] | None = None, *, sink: SinkFactory = ApplyToLedger) -> int:
    """Validate, build and run until cancelled; exit status 2 on invalid flags. LOG_LEVEL=DEBUG logs each event."""
    configure_logging(logging.getLevelName(os.environ.get("LOG_LEVEL", "INFO").upper()))
    options = parse_options(argv)
    try:
        pipeline = build_pipeline(options, sink=sink)
    except ValueError as exc:
        print(f"invalid pipeline options: {exc}", file=sys.stderr)
        return 2
    if options.view_as(StandardOptions).runner == ACKING_LOCAL_RUNNER:
        without_state_cache()
        eager_monitoring_infos()
        try:
            memory_limit = recycle.limit_mb()
        except ValueError as exc:
            print(f"invalid configuration: {exc}", file=sys.stderr)
            return 2
        recycle.start(options.view_as(LedgerOptions).subscription, memory_limit)
        collect_less_often()  # last: what building the graph allocated is frozen with the rest
    result = pipeline.run()
    if resolved_read_mode(options) == "native":
        log_ready(subscription=options.view_as(LedgerOptions).subscription, region=worker_region(options),
                  read="native")
    result.wait_until_finish()
    log(logging.INFO, "pipeline stopped", state=str(result.state))
    return 0
