"""Every PayNow event type, as PayNow's definitions describe it, is recorded by the Firestore sink."""
from __future__ import annotations

from typing import Any

from google.cloud import firestore

from ops.local.topology import Topology
from pipeline.firestore_transport import FirestoreConfig
from pipeline.ledger import needs_uid
from pipeline.model import Event
from pipeline.sink import LedgerWriter
from schemas import EVENT_TYPES, deliveries
from tests.pipeline import factories as f
from tests.pipeline.ledger_checks import check_invariants, read_state

LEDGER_TYPES = {
    "ON_ORDER_COMPLETED": f.order("t-order", "o1", [(f.P50, 2)]),
    "ON_REFUND": f.refund("t-refund", "o1"),
    "ON_CHARGEBACK": f.chargeback("t-cb", "o1"),
    "ON_CHARGEBACK_CLOSED": f.chargeback("t-cbc", "o1", "lost", closed=True),
    "ON_SUBSCRIPTION_ACTIVATED": f.cycle("t-sa", "s1", f.BASIC_MONTHLY, 1),
    "ON_SUBSCRIPTION_RENEWED": f.cycle("t-sr", "s1", f.BASIC_MONTHLY, 2),
}
EXPECTED = {"ON_ORDER_COMPLETED": "applied", "ON_REFUND": "applied", "ON_CHARGEBACK": "duplicate_business_key",
            "ON_CHARGEBACK_CLOSED": "duplicate_business_key", "ON_SUBSCRIPTION_ACTIVATED": "applied",
            "ON_SUBSCRIPTION_RENEWED": "applied"}


def every_type() -> list[dict[str, Any]]:
    """The ledger's types with scenario values; every other type (and a future one) from its definition alone."""
    others = [deliveries.delivery(t, f"t-{t.lower()}") for t in sorted(EVENT_TYPES - set(LEDGER_TYPES))]
    return [*LEDGER_TYPES.values(), *others, deliveries.delivery("ON_SOMETHING_NEW", "t-future")]


def test_every_event_type_is_recorded_with_its_ledger_effect_or_ignored(
        firestore_db: firestore.Client, topology: Topology) -> None:
    batch = every_type()
    for delivery in batch:
        if delivery["event_type"] in deliveries.defined_types():
            deliveries.validate(delivery)
    writer = LedgerWriter(firestore_db, FirestoreConfig(topology.project, region="us-central1"), threads=1)
    events = [Event(f.message(d), env := f.envelope(d), "u1" if needs_uid(env) else None) for d in batch]
    try:
        results = {r.event.envelope["eventType"]: r.status for r in writer.apply(events)}
    finally:
        writer.close()
    assert len(results) == len(EVENT_TYPES) + 1
    assert {t: s for t, s in results.items() if t in LEDGER_TYPES} == EXPECTED
    assert {s for t, s in results.items() if t not in LEDGER_TYPES} == {"ignored"}
    state = read_state(firestore_db)
    check_invariants(state)
    assert set(state.events) == {d["event_id"] for d in batch}
    assert all(state.events[d["event_id"]]["reason"] for d in batch if d["event_type"] not in LEDGER_TYPES)
    assert state.wallets == {"u1": 100 - 100 + 50 + 50}
