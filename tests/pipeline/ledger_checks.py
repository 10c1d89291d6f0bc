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

    def claimed(self) -> dict[str, tuple[str, int]]:
        """Every claimed key -> (uid, amount): a cycle's from its ledgerKeys doc, an order's from its aggregate
        (the aggregate's uid and stored amount, signed by the key's kind)."""
        found = {key: (str(c["uid"]), int(c["amount"])) for key, c in self.keys.items()}
        for order in self.orders.values():
            for key in order["entries"]:
                sign = -1 if key.startswith(("reversal:", "reinstatement-void:")) else 1
                found[key] = (str(order["uid"]), sign * int(order["amount"]))
        return found


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
    """paidBalance == sum(ledger) per user; claims (ledgerKeys, or an order's aggregate) <-> entries one to one;
    aggregates consistent with entries."""
    for uid in set(state.wallets) | set(state.entries):
        assert state.wallets.get(uid, 0) == sum(state.amounts(uid).values()), uid
    located = {key: uid for uid, book in state.entries.items() for key in book}
    assert sum(len(book) for book in state.entries.values()) == len(located), "a key in two users' ledgers"
    by_aggregate = {key for order in state.orders.values() for key in order["entries"]}  # an order's claims
    assert not set(state.keys) & by_aggregate, "an order's key with a ledgerKeys claim as well"
    assert set(state.keys) | by_aggregate == set(located), "claims and entries differ"
    for key, claim in state.keys.items():
        entry = state.entries[located[key]][key]
        assert (claim["uid"], claim["eventId"], claim["amount"]) == (located[key], entry["eventId"], entry["amount"])
    for key, uid in located.items():
        assert key in state.events[state.entries[uid][key]["eventId"]]["entryIds"], key
    for order_id, order in state.orders.items():
        keys = {k for k in located if k.split(":", 1)[1] == order_id and not k.startswith("subscription:")}
        assert set(order["entries"]) == keys, order_id
        for key in keys:
            assert located[key] == order["uid"], key
            assert abs(state.entries[order["uid"]][key]["amount"]) == order["amount"], key
