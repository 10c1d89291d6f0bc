"""CustomerCache: a uid is remembered for its TTL on the given clock, for every customer; unknowns are asked again."""
from __future__ import annotations

from pipeline.caches import CustomerCache


class Directory:
    """The customer -> uid mappings a lookup reads, counting the lookups (the RPCs the cache saves)."""

    def __init__(self, uids: dict[str, str]) -> None:
        self.uids = uids
        self.asked: list[str] = []

    def lookup(self, customer_id: str) -> str | None:
        self.asked.append(customer_id)
        return self.uids.get(customer_id)


def test_a_uid_is_remembered_until_its_ttl_on_the_clock() -> None:
    now = [100.0]
    directory = Directory({"cus_1": "u1"})
    cache = CustomerCache(directory.lookup, ttl=60, clock=lambda: now[0])
    assert cache.uid("cus_1") == "u1"
    now[0] = 159.9
    directory.uids["cus_1"] = "u2"  # remapped: not seen until the entry expires
    assert cache.uid("cus_1") == "u1"
    assert directory.asked == ["cus_1"]
    now[0] = 160.0  # exactly ttl after the lookup: expired
    assert cache.uid("cus_1") == "u2"
    assert directory.asked == ["cus_1", "cus_1"]


def test_unknown_customers_are_asked_every_time() -> None:
    directory = Directory({"cus_blank": ""})
    cache = CustomerCache(directory.lookup, ttl=60, clock=lambda: 0.0)
    assert [cache.uid("cus_x"), cache.uid("cus_x"), cache.uid("cus_blank"), cache.uid("cus_blank")] == [
        None, None, "", ""]
    assert directory.asked == ["cus_x", "cus_x", "cus_blank", "cus_blank"]


def test_no_size_bound_evicts_a_customer_within_its_ttl() -> None:
    now = [0.0]
    customers = {f"cus_{i}": f"u{i}" for i in range(5000)}
    directory = Directory(customers)
    cache = CustomerCache(directory.lookup, ttl=60, clock=lambda: now[0])
    for customer in customers:
        now[0] += 0.01
        cache.uid(customer)
    assert all(cache.uid(customer) == uid for customer, uid in customers.items())
    assert len(directory.asked) == len(customers)
