"""Ordering keys are a bounded set chosen by the customer: the guard against minting a key per order or event.

The Pub/Sub emulator keeps a thread per ordering key it has ever seen, and each distinct key costs the ingress
one Publish RPC; a key per order, event or customer let `paynow drill load` grow the emulator to 13,458 threads.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import ORDERING_KEYS, customer_ordering_key, envelope_from_payload, ordering_key
from schemas import deliveries as d

TS = 1_764_158_400_000
IDS = st.integers(min_value=1, max_value=10**18).map(str)
NO_EFFECT_TYPES = sorted({"ON_PAYMENT_COMPLETED", "ON_DELIVERY_ITEM_ADDED", "ON_TRIAL_ACTIVATED",
                          "ON_SUBSCRIPTION_CANCELED", "ON_CONNECTED_USER_REGISTERED", "ON_SOMETHING_NEW"})


def mapped(delivery: dict[str, Any]) -> dict[str, Any]:
    return envelope_from_payload(d.encode(delivery), timestamp_ms=TS, region="us-central1")


def _line() -> dict[str, Any]:
    return d.order_line("1", "459935272365195264")


# Each maker builds a real delivery from PayNow's definitions out of fresh ids: an event id, an order or
# subscription id, and a customer id or None (the types whose customer may be null).
Maker = Callable[[str, str, str | None], dict[str, Any]]
MAKERS: list[Maker] = [
    lambda e, o, c: d.order_completed(e, o, c or "1", [_line()], uid=f"u{c}" if c else None),
    lambda e, o, c: d.refund(e, f"r{e}", o, "completed", customer_id=c),
    lambda e, o, c: d.chargeback(e, f"p{e}", o, "lost", closed=True, customer_id=c),
    lambda e, o, c: d.chargeback(e, f"p{e}", o, "open", customer_id=c),
    lambda e, o, c: d.subscription_cycle(e, o, "459935272365195264", 1, c or "1"),
    *(lambda e, o, c, t=t: d.no_effect(t, e, customer_id=c, order_id=o) for t in NO_EFFECT_TYPES),
    *(lambda e, o, c, t=t: d.no_effect(t, e) for t in NO_EFFECT_TYPES),
]
DELIVERY = st.tuples(st.integers(min_value=0, max_value=len(MAKERS) - 1), IDS, IDS, st.one_of(st.none(), IDS))
"""(maker, event id, order id, customer id or None): drawn small so a falsifying example prints readably."""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries=st.lists(DELIVERY, min_size=40, max_size=120), keys=st.integers(min_value=1, max_value=16))
def test_any_set_of_deliveries_uses_at_most_the_configured_number_of_keys(
        deliveries: list[tuple[int, str, str, str | None]], keys: int) -> None:
    found = {ordering_key(mapped(MAKERS[m](e, o, c)), keys) for m, e, o, c in deliveries}
    assert len(found) <= keys, f"{len(found)} distinct ordering keys from {len(deliveries)} deliveries"


def test_the_default_bound_holds_over_thousands_of_customers_orders_and_events() -> None:
    found = {ordering_key(mapped(MAKERS[i % len(MAKERS)](f"9{i}", f"8{i}", f"7{i}" if i % 3 else None)))
             for i in range(3_000)}
    assert len(found) == ORDERING_KEYS  # every key used, none beyond the bound


@given(customer=IDS, events=st.lists(st.tuples(st.integers(min_value=0, max_value=4), IDS, IDS), min_size=1,
                                     max_size=8))
def test_every_event_naming_a_customer_gets_that_customers_key(customer: str,
                                                               events: list[tuple[int, str, str]]) -> None:
    """Orders (with or without a uid), refunds, chargebacks and cycles of one customer share one key, so
    Pub/Sub keeps them in the order they were published."""
    keys = {ordering_key(mapped(MAKERS[m](e, o, customer))) for m, e, o in events}
    assert keys == {customer_ordering_key(customer)}


def test_an_order_and_its_customerless_reversals_share_a_key() -> None:
    refund = mapped(d.refund("2", "r2", "500", "completed"))
    chargeback = mapped(d.chargeback("3", "p3", "500", "lost", closed=True))
    assert ordering_key(refund) == ordering_key(chargeback)


def test_keys_spread_evenly_over_the_set() -> None:
    """5,000 customers over 32 keys: about 156 each; a hash that favours some keys would make them hot."""
    counts = Counter(customer_ordering_key(str(411486491630370816 + i)) for i in range(5_000))
    mean = 5_000 / ORDERING_KEYS
    assert len(counts) == ORDERING_KEYS and max(counts.values()) < 1.35 * mean and min(counts.values()) > 0.65 * mean


def test_the_key_of_a_customer_is_the_same_in_every_process_and_release() -> None:
    """A hash of the id's bytes, not Python's salted hash(): two ingress instances (and a rolling deploy) must
    agree, or one customer's events would travel under two keys."""
    assert customer_ordering_key("3001") == "k15/32"
    assert customer_ordering_key("3001", 8) == "k7/8"


@pytest.mark.parametrize("keys", [0, 1025])
def test_a_bound_outside_1_to_1024_is_refused(keys: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 1024"):
        customer_ordering_key("3001", keys)
