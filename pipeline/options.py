"""The ledger pipeline's command-line flags (`LedgerOptions`) and their validation."""
from __future__ import annotations

import re
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from schemas import CURRENT_VERSION

SUBSCRIPTION_RE = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
TOPIC_RE = re.compile(r"^projects/[^/]+/topics/[^/]+$")
READ_MODES = ("auto", "acking", "native")

# name -> (type, default, help); the Flex Template metadata is generated from (and tested against) this table.
_FLAGS: dict[str, tuple[type, Any, str]] = {
    "subscription": (str, None, "Pub/Sub subscription to read envelopes from: projects/P/subscriptions/S."),
    "dlq_topic": (str, None, "Pub/Sub topic for dead letters: projects/P/topics/T."),
    "firestore_database": (str, "(default)", "Firestore database id holding the ledger."),
    "min_compatible": (int, 2, f"Oldest envelope version accepted (1..{CURRENT_VERSION}); older ones go to the "
                                "DLQ as drop_incompatible."),
    "dedupe_ttl": (int, 3600, "Seconds an eventId is remembered by the in-pipeline dedupe step."),
    "read_mode": (str, "auto", "Pub/Sub read step: acking (ack after commit), native (ReadFromPubSub), or auto "
                               "(native on DataflowRunner, acking otherwise)."),
    "max_write_attempts": (int, 5, "Attempts (with backoff and adaptive throttling) for a Firestore call on "
                                   "transient errors before the event is released for redelivery (acking read) "
                                   "or its bundle retried (Dataflow); transient errors are never dead-lettered."),
    "product_refresh_seconds": (int, 60, "Seconds between refreshes of the cached product catalog."),
    "event_ttl_days": (int, 30, "Days until a webhookEvents document expires (its expiresAt field)."),
    "metrics_port": (int, 0, "If > 0, serve Prometheus metrics on 127.0.0.1:PORT in each worker process."),
}


class LedgerOptions(PipelineOptions):
    """Flags of the paynow-ledger pipeline (Beam's own --project, --region, --runner are used as they are)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        for name, (kind, default, help_text) in _FLAGS.items():
            parser.add_argument(f"--{name}", type=kind, default=default, help=help_text)

    @classmethod
    def flag_names(cls) -> list[str]:
        """The custom flags, in declaration order (Beam's own flags excluded)."""
        return list(_FLAGS)

    @classmethod
    def flag_help(cls) -> dict[str, str]:
        """Help text per custom flag, for generated metadata."""
        return {name: help_text for name, (_, _, help_text) in _FLAGS.items()}


def _positive(options: LedgerOptions, name: str) -> None:
    if getattr(options, name) < 1:
        raise ValueError(f"--{name} must be a positive integer, got {getattr(options, name)}")


def validate(options: PipelineOptions) -> None:
    """Raise ValueError naming the first invalid flag."""
    ledger = options.view_as(LedgerOptions)
    if not ledger.subscription or not SUBSCRIPTION_RE.match(ledger.subscription):
        raise ValueError(f"--subscription must look like projects/PROJECT/subscriptions/NAME, "
                         f"got {ledger.subscription!r}")
    if not ledger.dlq_topic or not TOPIC_RE.match(ledger.dlq_topic):
        raise ValueError(f"--dlq_topic must look like projects/PROJECT/topics/NAME, got {ledger.dlq_topic!r}")
    if not options.view_as(GoogleCloudOptions).project:
        raise ValueError("--project is required (the Firestore and Pub/Sub project)")
    if not ledger.firestore_database:
        raise ValueError("--firestore_database must not be empty")
    if not 1 <= ledger.min_compatible <= CURRENT_VERSION:
        raise ValueError(f"--min_compatible must be between 1 and {CURRENT_VERSION}, got {ledger.min_compatible}")
    if ledger.read_mode not in READ_MODES:
        raise ValueError(f"--read_mode must be one of {', '.join(READ_MODES)}, got {ledger.read_mode!r}")
    for name in ("dedupe_ttl", "max_write_attempts", "product_refresh_seconds", "event_ttl_days"):
        _positive(ledger, name)
    if not 0 <= ledger.metrics_port <= 65535:
        raise ValueError(f"--metrics_port must be between 0 and 65535, got {ledger.metrics_port}")
    if resolved_read_mode(options) == "acking" and is_dataflow(options):
        raise ValueError("--read_mode acking is for DirectRunner/on-premises runs; Dataflow needs native")


def is_dataflow(options: PipelineOptions) -> bool:
    return "dataflow" in str(options.view_as(StandardOptions).runner or "").lower()


def resolved_read_mode(options: PipelineOptions) -> str:
    """`acking` or `native`: auto picks native on Dataflow (it acks after its checkpoint), acking elsewhere."""
    mode = options.view_as(LedgerOptions).read_mode
    if mode == "auto":
        return "native" if is_dataflow(options) else "acking"
    return str(mode)


def worker_region(options: PipelineOptions) -> str:
    """Beam's --region, the label of every metric and document this worker writes."""
    return options.view_as(GoogleCloudOptions).region or "unknown"
