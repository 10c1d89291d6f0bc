"""The acking read's claims: a copy is dropped (and acked) only once an earlier copy's fate is durable."""
from __future__ import annotations

from pipeline.dedupe import IN_FLIGHT
from pipeline.local.dedupe import NEW, SETTLED, Claims, claims_for


def test_claims_drop_a_copy_only_after_its_event_is_settled() -> None:
    now = [0.0]
    claims = Claims(ttl=60, clock=lambda: now[0], stale_after=600)
    assert claims.claim("a") == NEW
    assert claims.claim("a") == IN_FLIGHT  # the first copy is not durable yet: release this one
    claims.forget(["a"])  # its DLQ publish failed / Firestore stayed down: it was released
    assert claims.claim("a") == NEW  # so its redelivery is processed again, not acked as a duplicate
    claims.settle(["a"])  # committed (or dead-lettered, or found committed)
    assert claims.claim("a") == SETTLED
    now[0] = 59.0
    assert claims.claim("a") == SETTLED
    now[0] = 60.0
    assert claims.claim("a") == NEW  # past the TTL the memory is gone; Firestore's create-once covers it
    now[0] = 700.0
    assert claims.claim("a") == NEW  # a claim neither settled nor released goes stale
    assert len(claims) == 1


def test_claims_are_shared_per_subscription() -> None:
    first = claims_for("projects/p/subscriptions/claims-test", 10)
    assert claims_for("projects/p/subscriptions/claims-test") is first and first.ttl == 10
    assert claims_for("projects/p/subscriptions/other") is not first
