"""webhookEvents records how an event reached the topic: PayNow's push, or the reconciler's recovery."""
from __future__ import annotations

import datetime as dt

import pytest

from pipeline.ledger import Decision, event_document
from tests.pipeline import factories as f

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


@pytest.mark.parametrize(("attribute", "recorded"), [
    (None, "push"), ("reconcile", "reconcile"), ("push", "push"), ("anything else", "push"), ("", "push")])
def test_source_is_push_unless_the_reconciler_published_it(attribute: str | None, recorded: str) -> None:
    envelope = f.envelope(f.order("e1", "o1", [(f.P20, 1)]))
    kwargs = {} if attribute is None else {"source": attribute}
    doc = event_document(envelope, Decision("applied"), ordering_key="uid:u1", worker_region="us-central1",
                         published_at=NOW, expires_at=NOW, **kwargs)
    assert doc["source"] == recorded
