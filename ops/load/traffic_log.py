"""The traffic log: one JSON line per delivery sent (with every answer), a run header, and operator actions.

The traffic generator and the drills write it; the audit's ledger model, `paynow reconcile` and the fake PayNow
API read it. It records what was sent and answered, never what the ledger should become, and each delivery without
its personal fields (schemas/personal.py: what the model and the fake need is all kept).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.admin.catalog import KNOWN_PRODUCTS, points
from schemas import personal


class Recorder:
    """Appends one JSON line per webhook (with every attempt's answer) or legacy publish to the run's log."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(line(record))

    def close(self) -> None:
        self._file.close()


def line(record: dict[str, Any]) -> str:
    """One JSON line of a traffic log; a delivery in it loses its personal fields (the caller's copy is kept)."""
    if isinstance(record.get("delivery"), dict):
        record = {**record, "delivery": personal.strip(copy.deepcopy(record["delivery"]))}
    return json.dumps(record, separators=(",", ":")) + "\n"


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Add an operator's action to a traffic log: a `mapping` ({customerId, uid}), a `replay` or a `recovered`
    ({eventIds}), so the judge's model sees what the pipeline saw."""
    with path.open("a") as handle:
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                break  # a generator still writing this log: its last line is not complete yet
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                raise ValueError(f"{path}:{number}: not a JSON line") from None


RECORD_KINDS = ("run", "webhook", "legacy", "mapping", "replay", "recovered")
"""`replay`: {eventIds} an operator replayed from the DLQ; `recovered`: {eventIds} PayNow gave up on (no 2xx) that
the reconciler published afterwards; both mean the pipeline saw those deliveries (again)."""


def read_log(path: Path, *, compact: bool = False) -> list[dict[str, Any]]:
    """The records of a traffic log in order: its run header (catalog, mappings), webhooks, legacy publishes, and the
    mappings and DLQ replays an operator did during the run (the model needs them all); summaries are left out.

    `compact` keeps each delivery as its compact JSON text (read it with `delivery_of`): a parsed delivery costs
    ~10 KB of memory, its text ~2 KB, and a load drill's log holds 100k+ of them.
    """
    records = []
    for record in _lines(path):
        if record.get("kind") in RECORD_KINDS:
            if compact and isinstance(record.get("delivery"), dict):
                record["delivery"] = json.dumps(record["delivery"], separators=(",", ":"), ensure_ascii=False)
            records.append(record)
    return records


def delivery_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The PayNow delivery a record holds (as read by `read_log`, or as written), None if it holds none (v1)."""
    delivery = record.get("delivery")
    if isinstance(delivery, str):
        parsed: dict[str, Any] = json.loads(delivery)
        return parsed
    return delivery


@dataclass
class Context:
    """What a judge needs besides the deliveries: run ids, the catalog (product -> points), customer mappings."""

    run_ids: set[str] = field(default_factory=set)
    catalog: dict[str, int] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        """Take in a `run` header or a `mapping` record (a customer mapped during a run, e.g. before a replay)."""
        if record.get("kind") == "run":
            self.run_ids.add(str(record["runId"]))
            self.catalog.update({str(k): int(v) for k, v in (record.get("catalog") or {}).items()})
            self.customers.update({str(k): str(v) for k, v in (record.get("customers") or {}).items()})
        elif record.get("kind") == "mapping":
            self.customers[str(record["customerId"])] = str(record["uid"])


def context_of(records: Iterable[dict[str, Any]]) -> Context:
    """The union of the run headers and mapping records among `records` (the catalog defaults to the known one)."""
    context = Context()
    for record in records:
        context.add(record)
    if not context.catalog:
        context.catalog = points(KNOWN_PRODUCTS)
    return context


def read_context(paths: Iterable[Path]) -> Context:
    """The context of traffic logs (see `context_of`)."""
    return context_of(r for path in paths for r in _lines(path))
