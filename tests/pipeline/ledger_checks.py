"""Read a test project's ledger back from Firestore and check the spec's invariants on it (independent of the sink)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud import firestore


@dataclass
class LedgerState:
    wallets: dict[str, int]
    entries: dict[str, dict[str, dict[str, Any]]]  # uid -> key -> entry
    keys: dict[str, dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    events: dict[str, dict[str, Any]]

    def amounts(self, uid: str) -> dict[str, int]:
        return {k: int(e["amount"]) for k, e in self.entries.get(uid, {}).items()}


def read_state(db: firestore.Client) -> LedgerState:
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    for snap in db.collection_group("ledger").stream():
        uid = snap.reference.parent.parent.id
        entries.setdefault(uid, {})[snap.id] = snap.to_dict()
    wallets = {s.reference.parent.parent.id: int(s.get("paidBalance"))
               for s in db.collection_group("wallet").stream() if s.id == "points"}
    return LedgerState(wallets, entries, {s.id: s.to_dict() for s in db.collection("ledgerKeys").stream()},
                       {s.id: s.to_dict() for s in db.collection("orders").stream()},
                       {s.id: s.to_dict() for s in db.collection("webhookEvents").stream()})


def check_invariants(state: LedgerState) -> None:
    """paidBalance == sum(ledger) per user; claims <-> entries one to one; aggregates consistent with entries."""
    for uid in set(state.wallets) | set(state.entries):
        assert state.wallets.get(uid, 0) == sum(state.amounts(uid).values()), uid
    located = {key: uid for uid, book in state.entries.items() for key in book}
    assert sum(len(book) for book in state.entries.values()) == len(located), "a key in two users' ledgers"
    assert set(state.keys) == set(located), "claims and entries differ"
    for key, claim in state.keys.items():
        entry = state.entries[located[key]][key]
        assert (claim["uid"], claim["eventId"], claim["amount"]) == (located[key], entry["eventId"], entry["amount"])
        assert key in state.events[entry["eventId"]]["entryIds"], key
    for order_id, order in state.orders.items():
        keys = {k for k in located if k.split(":", 1)[1] == order_id and not k.startswith("subscription:")}
        assert set(order["entries"]) == keys, order_id
        for key in keys:
            assert located[key] == order["uid"], key
            assert abs(state.entries[order["uid"]][key]["amount"]) == order["amount"], key
