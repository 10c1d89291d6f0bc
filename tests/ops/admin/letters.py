"""Dead letters recorded by the pipeline's own writer (pipeline.dead_letters), for the ops tools' tests."""
from __future__ import annotations

import functools

from google.cloud import firestore

from pipeline.dead_letters import record_dead_letters
from pipeline.firestore_transport import FirestoreConfig, FirestoreTransport
from pipeline.model import Rejected
from tests.pipeline import factories as f


def record(db: firestore.Client, rejected: list[Rejected], failed_at_ms: int) -> None:
    commit = FirestoreTransport(db, FirestoreConfig(db.project, region="us-central1")).commit
    assert record_dead_letters(commit, rejected, "us-central1", failed_at_ms) == []


@functools.cache  # the same message each time (its envelope carries the time it was built)
def unmapped(event_id: str, customer: str = "cus_1", region: str = "europe-west1") -> Rejected:
    """An order of an unmapped customer, rejected by ResolveAccount."""
    delivery = f.order(event_id, f"o_{event_id}", [(f.P50, 1)], customer=customer, uid=None)
    return Rejected(f.message(delivery, region=region), "unmapped_customer", f"no uid for {customer}",
                    "ResolveAccount", region, event_id)
