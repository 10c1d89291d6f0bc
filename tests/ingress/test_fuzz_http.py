"""HTTP-level fuzz: a correctly signed real PayNow delivery of every event type with one value anywhere in its JSON tree
(every key and index, not only what the mapping reads) replaced by a hostile one or deleted; the ingress answers 2xx
with a decodable published envelope, or a 4xx with a JSON error body, and never a 5xx (DESIGN §1)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from ingress import create_app
from schemas import decode_envelope, deliveries
from schemas.paynow import minimised
from tests.ingress.conftest import WEBHOOK, RecordingPublisher, make_settings, signed_headers

Path = tuple[str | int, ...]
HOLE = "\x00hole\x00"  # a string no delivery holds; its JSON text is replaced by the raw hostile text
DELETE = object()


@cache
def bases() -> list[dict[str, Any]]:
    """Real deliveries (schemas.deliveries, built from PayNow's definitions): every type of the enum (the example of
    its published schema, or an empty body for types without one), and the ledger's types as the scenarios send
    them (a uid in the checkout, a customer on refunds and chargebacks)."""
    out = [deliveries.delivery(t, f"40{n:016d}") for n, t in enumerate(deliveries.event_type_enum())]
    line = deliveries.order_line("501", "459935272365195264", 2)
    out += [deliveries.order_completed("7001", "8001", "3001", [line], uid="user-1"),
            deliveries.refund("7002", "9002", "8001", "completed", customer_id="3001"),
            deliveries.chargeback("7003", "9003", "8001", "open", customer_id="3001"),
            deliveries.chargeback("7004", "9004", "8001", "won", closed=True, customer_id="3001"),
            deliveries.subscription_cycle("7005", "9005", "459935272365195264", 2, "3001", uid="user-1",
                                          renewed=True)]
    return out


def paths(doc: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every path of the JSON tree below the root: each dict key and each list index, leaves and inner nodes."""
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


@cache
def targets() -> list[tuple[int, Path]]:
    return [(i, p) for i, doc in enumerate(bases()) for p in paths(doc)]


DEEP = 20_000  # far past json's recursion limit, well under the 64 KiB body limit
HOSTILE_TEXT = [  # raw JSON text: what json.dumps would never write
    "[" * DEEP + "]" * DEEP, '{"a":' * (DEEP // 5) + "1" + "}" * (DEEP // 5), "1e9999999999", "-1e9999999999",
    "1e-9999999999", "9" * 5000, "-" + "9" * 5000, "NaN", "Infinity", "-Infinity", "1.5", "-0", "1e308",
    "18446744073709551616", '"\\ud800"', '"\\udfff x"', '"a\\u0000b"', '"\\u001b[31m"', '"\\ud83d\\ude00"',
    '"\ud800"',  # a lone surrogate as raw bytes (surrogatepass): not UTF-8 at all
]
HOSTILE_VALUES: list[Any] = [  # ordinary JSON of the wrong type, shape or size
    None, True, False, 0, -1, 2**63, 1.0, "", " ", "x" * 10_000, "\u202e" * 50, [], {}, [None], {"": None},
    ["459935272365195264"], {"id": "3001"}, "ON_ORDER_COMPLETED", "a b/c", "\x7f" * 3,
]


def render(doc: Any, path: Path, hostile: Any) -> bytes:
    """The delivery's wire form with the value at `path` replaced by `hostile` (raw JSON text when a str from
    HOSTILE_TEXT is wrapped in a tuple), or deleted."""
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if hostile is DELETE:
        del parent[path[-1]]
        return deliveries.encode(doc)
    if isinstance(hostile, tuple):
        parent[path[-1]] = HOLE
        text = deliveries.encode(doc).decode()
        hole = json.dumps(HOLE)
        assert text.count(hole) == 1
        return text.replace(hole, hostile[0]).encode("utf-8", "surrogatepass")
    parent[path[-1]] = hostile
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


@dataclass
class Harness:
    client: TestClient
    publisher: RecordingPublisher
    published: set[str] = field(default_factory=set)  # eventIds the ingress published


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    publisher = RecordingPublisher()
    with TestClient(create_app(make_settings(RATE_LIMIT_PER_MINUTE="0"), publisher=publisher),
                    raise_server_exceptions=False) as client:
        yield Harness(client, publisher)


def check(harness: Harness, body: bytes) -> int:
    """POST the signed body; judge the answer by the contract, and a 2xx by what reached the publisher."""
    before = len(harness.publisher.messages)
    response = harness.client.post(WEBHOOK, content=body, headers=signed_headers(body))
    new = harness.publisher.messages[before:]
    status = response.status_code
    assert status < 500, (status, response.text[:300])
    assert 200 <= status < 300 or 400 <= status < 500, status
    answer = response.json()
    assert isinstance(answer, dict), answer
    if status >= 400:
        assert isinstance(answer.get("error"), str) and answer["error"], answer
        assert not new, "a refused delivery was published"
        return status
    assert answer.get("status") == "accepted", answer
    if status == 202:
        assert len(new) == 1, f"202 with {len(new)} messages published"
        data, attributes, _ = new[0]
        envelope = decode_envelope(data)  # the schemas' codec, independent of the ingress
        assert envelope["eventId"] == answer["eventId"] == attributes["eventId"]
        assert envelope["data"]["rawPayload"] == minimised(json.loads(body))  # the delivery, minus personal data
        harness.published.add(envelope["eventId"])
    else:  # 200: a recent duplicate, answered without publishing again
        assert status == 200 and not new, (status, len(new))
        assert answer["eventId"] in harness.published
    return status


@dataclass(frozen=True)
class Mutation:
    """Which delivery, which path, which hostile value: a short falsifying example (the body can be 40 kB)."""

    base: int
    path: Path
    hostile: Any

    def __repr__(self) -> str:
        shown = ("<deleted>" if self.hostile is DELETE else f"raw {_short(self.hostile[0])}"
                 if isinstance(self.hostile, tuple) else _short(json.dumps(self.hostile)))
        return f"Mutation({bases()[self.base]['event_type']} #{self.base}, {list(self.path)} = {shown})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints examples with this
        printer.text(repr(self))

    def body(self) -> bytes:
        return render(bases()[self.base], self.path, self.hostile)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:16]!r}…{text[-8:]!r} ({len(text)} chars)"


POOL: list[Any] = [DELETE, *((t,) for t in HOSTILE_TEXT), *HOSTILE_VALUES]


generated = st.one_of(  # beyond the fixed pool: any depth, any odd code point, any size of number
    st.integers(1, DEEP).map(lambda depth: ("[" * depth + "]" * depth,)),
    st.text(st.characters(categories=["Cc", "Cf", "Co", "Zl", "Zp"]), max_size=40),
    st.integers(min_value=2**53) | st.integers(max_value=-(2**53)),
    st.floats(),  # nan and ±inf included: json writes them as NaN / Infinity
    st.recursive(st.none() | st.booleans() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                 max_leaves=8),
)


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    base, path = targets()[draw(st.integers(0, len(targets()) - 1))]
    hostile = POOL[draw(st.integers(0, len(POOL) - 1))] if draw(st.integers(0, 2)) else draw(generated)
    return Mutation(base, path, hostile)


@given(mutations())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
def test_signed_hostile_bodies_never_5xx(harness: Harness, mutation: Mutation) -> None:
    hostile = mutation.hostile
    note(repr(mutation))
    event(f"replaced {'deleted' if hostile is DELETE else 'raw text' if isinstance(hostile, tuple) else 'value'}")
    event(f"status {check(harness, mutation.body())}")


def test_every_path_takes_a_hostile_value(harness: Harness) -> None:
    """Every path of every base, deterministically, each with the next hostile value in turn (hypothesis above
    samples; this covers each path at least once)."""
    statuses: dict[int, int] = {}
    for n, (base, path) in enumerate(targets()):
        mutation = Mutation(base, path, POOL[n % len(POOL)])
        try:
            status = check(harness, mutation.body())
        except AssertionError as exc:
            raise AssertionError(f"{mutation!r}: {exc}") from None
        statuses[status] = statuses.get(status, 0) + 1
    print(f"{len(targets())} paths: {dict(sorted(statuses.items()))}")
    assert statuses.get(202, 0) > 0 and statuses.get(400, 0) > 0  # both outcomes happen, so both are judged


def test_unmutated_bases_are_accepted(harness: Harness) -> None:
    """The bases themselves are valid deliveries: each is accepted and published (so a mutation is what refuses)."""
    for doc in bases():
        assert check(harness, deliveries.encode(doc)) in (200, 202), doc["event_type"]
