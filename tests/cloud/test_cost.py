"""deploy/README.md's cost table: the Firestore writes per event it prices are the commit plan's own, measured by
running pipeline.commit_plan.commit_writes on real deliveries (the schemas' delivery factory), one event per commit
as the night-time worst case (a commit writes each wallet once however many of its user's events it holds)."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pipeline.commit_plan import Pending, commit_writes
from pipeline.ledger import OrderAggregate, Product, decide
from pipeline.model import Event
from tests.pipeline import factories as f

from .terraform import DEPLOY

README = (DEPLOY / "README.md").read_text()
PRODUCTS = {pid: Product(points) for pid, points in f.POINTS.items()}
NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def writes_of(delivery: dict[str, Any], uid: str | None = "u1", aggregate: OrderAggregate | None = None) -> int:
    event = Event(f.message(delivery), f.envelope(delivery), uid)
    pending = Pending(0, event, decide(event.envelope, PRODUCTS, uid, aggregate), None)
    return len(commit_writes([pending], worker_region="us-central1", now=NOW, event_ttl_days=30))


def measured() -> dict[str, int]:
    bought = OrderAggregate(uid="u1", amount=20, purchased=True, entries=("purchase:o1",))
    return {
        "crediting order": writes_of(f.order("e1", "o1", [(f.P20, 1)])),
        "refund": writes_of(f.refund("r1", "o1"), uid=None, aggregate=bought),
        "subscription cycle": writes_of(f.cycle("s1", "sub1", f.BASIC_MONTHLY, 1)),
        "ignored event": writes_of(f.refund("r2", "o2", "pending"), uid=None),
        "duplicate": 0,  # pipeline/sink.py: its webhookEvents doc exists on read, nothing is committed
    }


def test_the_cost_tables_writes_per_event_are_measured() -> None:
    section = README.split("\n## Cost\n", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| (crediting order|refund|subscription cycle|ignored event|duplicate) \| (\d+) \|",
                            section, re.MULTILINE))
    assert {k: int(v) for k, v in table.items()} == measured() == {
        "crediting order": 4, "refund": 4, "subscription cycle": 4, "ignored event": 1, "duplicate": 0}


def test_the_cost_table_prices_idle_10_and_100_per_second_with_formulas() -> None:
    section = README.split("\n## Cost\n", 1)[1].split("\n## ", 1)[0]
    for load in ("idle", "10/s", "100/s"):
        assert f"**{load}**" in section, load
    assert "× 4" in section  # the writes-per-event figure is in the formula
    assert "lb_log_sample_rate" in section and "PIPELINE_LOG_LEVEL" in section
