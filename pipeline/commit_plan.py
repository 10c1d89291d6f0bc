"""The commit plan (pure): which events commit together, in which order, and the writes of each commit."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.ledger import Decision, acts_on_order, claim_key, event_document, order_id
from pipeline.model import Event
from schemas import dead_letters, ordering_key
from schemas.attributes import PUSH_SOURCE, REPLAYED_AT
from schemas.attributes import SOURCE as SOURCE_ATTRIBUTE

MAX_WRITES_PER_COMMIT = 450  # Firestore allows 500; leave room
EVENTS_PER_COMMIT = 50


@dataclass(frozen=True)
class Create:
    """Create `path` with `fields`; fails (AlreadyExists) if it exists. `server_time` fields get the commit time."""

    path: str
    fields: Mapping[str, Any]
    server_time: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplaceIfUnchanged:
    """Write `path` whole only if it is still the version read (`update_time`, a Timestamp proto), or still
    absent when `update_time` is None; fails (FailedPrecondition / AlreadyExists) otherwise."""

    path: str
    fields: Mapping[str, Any]
    update_time: Any
    server_time: tuple[str, ...] = ()


@dataclass(frozen=True)
class Increment:
    """Upsert `path` changing only the given counters (by Increment) and its `server_time` fields."""

    path: str
    increments: Mapping[str, int]
    server_time: tuple[str, ...] = ()


@dataclass(frozen=True)
class Upsert:
    """Create or update `path` setting only `fields` (the others are kept), adding `increments` and lowering
    `minimums` (a field absent so far takes the given value)."""

    path: str
    fields: Mapping[str, Any]
    increments: Mapping[str, int] = field(default_factory=dict)
    minimums: Mapping[str, int] = field(default_factory=dict)


Write = Create | ReplaceIfUnchanged | Increment | Upsert
Work = tuple[int, Event, str]
"""An event to apply: its index in the batch, the event, its event class."""


@dataclass(frozen=True)
class Pending:
    """A decided event and the version of its order aggregate the decision was made on (None: absent)."""

    index: int
    event: Event
    decision: Decision
    update_time: Any = None


def event_paths(event: Event, cls: str) -> set[str]:
    """The documents whose state decides this event: its own, its order aggregate, or its claimed key."""
    paths = {f"webhookEvents/{event.envelope['eventId']}"}
    if acts_on_order(event.envelope, cls):
        paths.add(f"orders/{order_id(event.envelope)}")
    elif claim := claim_key(event.envelope, cls):
        paths.add(f"ledgerKeys/{claim}")
    return paths


def waves(work: list[Work]) -> list[list[Work]]:
    """Events touching the same document (event id, order aggregate, claimed key) land in successive
    waves, in arrival order; events within a wave share no document."""
    found: list[tuple[set[str], list[Work]]] = []
    for item in work:
        mine = event_paths(item[1], item[2])
        target = 1 + max((w for w, (paths, _) in enumerate(found) if paths & mine), default=-1)
        if target == len(found):
            found.append((set(), []))
        found[target][0].update(mine)
        found[target][1].append(item)
    return [items for _, items in found]


def groups(pending: list[Pending]) -> list[list[Pending]]:
    """Commit groups of one wave, each user's events kept together: one commit holds all of a user's events up to
    Firestore's write limit (so its wallet is written once for all of them), and a new group starts at a user
    boundary once it holds EVENTS_PER_COMMIT events. A user needing more than one commit (several hundred writes)
    has them in consecutive groups, which `lanes` keeps in one lane, so they never commit in parallel."""
    by_user: dict[str, list[Pending]] = {}
    for p in pending:
        by_user.setdefault(p.decision.uid or f"#{p.index}", []).append(p)  # no user: no wallet, each alone
    found: list[list[Pending]] = [[]]
    writes = 0
    for user_items in by_user.values():
        if len(found[-1]) >= EVENTS_PER_COMMIT:
            found.append([])
            writes = 0
        for p in user_items:
            cost = 3 + 2 * len(p.decision.entries)  # event doc, aggregate, wallet + claim and entry each
            if found[-1] and writes + cost > MAX_WRITES_PER_COMMIT:
                found.append([])
                writes = 0
            found[-1].append(p)
            writes += cost
    return [g for g in found if g]


def lanes(commits: list[list[Pending]]) -> list[list[list[Pending]]]:
    """The groups to commit one after another in one lane: groups sharing a wallet (a user) share a lane, so two
    commits never write one wallet document at the same time (a Firestore document sustains about one write per
    second; concurrent commits on it contend). Lanes run in parallel; each keeps its groups' order."""
    found: list[tuple[set[str], list[list[Pending]]]] = []
    for group in commits:
        wallets = {p.decision.uid for p in group if p.decision.uid and p.decision.entries}
        joined = [lane for lane in found if lane[0] & wallets]
        if not joined:
            found.append((set(wallets), [group]))
            continue
        first = joined[0]
        for other in joined[1:]:  # a group spanning two lanes' wallets merges them, groups kept in arrival order
            first[0].update(other[0])
            first[1].extend(other[1])
            found = [lane for lane in found if lane is not other]
        first[0].update(wallets)
        first[1].append(group)
    return [lane for _, lane in found]


def commit_writes(items: list[Pending], *, worker_region: str, now: dt.datetime, event_ttl_days: int) -> list[Write]:
    """One atomic commit: each event doc, aggregate (conditioned), claims and entries; one Increment per wallet.

    Writes (each a billed Firestore write): a crediting order 4 (event doc, aggregate, entry, wallet), a cycle 4
    (event doc, `ledgerKeys` claim, entry, wallet), an ignored event 1; a wallet is written once per commit
    however many of its user's events the commit holds.

    A key is credited once database-wide (DESIGN §4). A cycle's key is claimed by its `ledgerKeys/{key}` doc,
    created under an exists=false precondition. An order's keys (purchase, reversal, reinstatement, void) are
    claimed by the order aggregate itself: only a commit that also writes `orders/{orderId}`, conditioned on the
    version it read (or on its absence), writes them, and the aggregate lists every key written (`entries`), so
    of two commits racing for a key one fails its precondition and is decided again on the new aggregate, which
    shows the key written. A `ledgerKeys` doc for them was a second claim guarding the same thing (a fifth write).
    """
    expires = now + dt.timedelta(days=event_ttl_days)
    deltas: dict[str, int] = {}
    writes: list[Write] = []
    for p in items:
        env, d = p.event.envelope, p.decision
        published = dt.datetime.fromtimestamp(p.event.message.publish_time_ms / 1000, dt.UTC)
        doc = event_document(env, d, ordering_key=ordering_key(env), worker_region=worker_region,
                             published_at=published, expires_at=expires,
                             source=p.event.message.attributes.get(SOURCE_ATTRIBUTE, PUSH_SOURCE))
        writes.append(Create(f"webhookEvents/{env['eventId']}", doc, ("processedAt",)))
        if d.aggregate is not None:
            writes.append(ReplaceIfUnchanged(f"orders/{d.order_id}", {"orderId": d.order_id, **d.aggregate.to_doc()},
                                             p.update_time, ("updatedAt",)))
        for key, entry in d.entries.items():
            if d.aggregate is None:  # an order's keys are claimed by its aggregate (see above)
                writes.append(Create(f"ledgerKeys/{key}", {"uid": d.uid, "eventId": env["eventId"],
                                                           "amount": entry["amount"]}))
            writes.append(Create(f"users/{d.uid}/ledger/{key}", entry, ("createdAt",)))
        if REPLAYED_AT in p.event.message.attributes:  # an operator's replay resolves its dead letter here
            writes.append(resolve_dead_letter(p, worker_region=worker_region, now=now))
        if d.entries:
            assert d.uid is not None
            deltas[d.uid] = deltas.get(d.uid, 0) + d.delta()
    for uid, delta in deltas.items():
        writes.append(Increment(f"users/{uid}/wallet/points", {"paidBalance": delta, "promoBalance": 0},
                                ("updatedAt",)))
    return writes


def resolve_dead_letter(p: Pending, *, worker_region: str, now: dt.datetime) -> Upsert:
    """The write marking a replayed event's dead letter resolved, in the same atomic commit as the event (only
    replays carry it: a normal event's commit writes nothing more)."""
    event_id = str(p.event.envelope["eventId"])
    by = dead_letters.resolved_by(event_id=event_id, status=p.decision.status, by="replay", region=worker_region,
                                  message_id=p.event.message.message_id)
    return Upsert(dead_letters.letter_path(event_id, p.event.message.data),
                  {dead_letters.STATE: dead_letters.RESOLVED, dead_letters.RESOLVED_BY: by,
                   dead_letters.RESOLVED_AT: int(now.timestamp() * 1000)})
