"""ResolveAccount: the user a credit event belongs to (envelope uid, else `paynowCustomers/{customerId}.uid`)."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection

from pipeline.caches import CustomerCache
from pipeline.firestore_transport import RPC_TIMEOUT, FirestoreConfig, FirestoreRpc, Unavailable, WriteFailed
from pipeline.ledger import needs_uid, valid_id
from pipeline.model import Event, reject
from pipeline.observability import log
from schemas.verdicts import Verdict

RESOLVED = "resolved"
DLQ = "dlq"
RELEASE = "release"
STEP = "ResolveAccount"


def resolve_uid(customer: dict[str, Any], lookup: Callable[[str], str | None]) -> str | None:
    """`customer.uid` (checkout.metadata.uid) if valid, else the mapped uid of a valid customer id, else None."""
    if valid_id(customer.get("uid")):
        return str(customer["uid"])
    customer_id = customer.get("id")
    if not valid_id(customer_id):
        return None
    uid = lookup(str(customer_id))
    return uid if valid_id(uid) else None


class _ResolveFn(beam.DoFn):
    def __init__(self, config: FirestoreConfig) -> None:
        self._config = config

    def setup(self) -> None:
        self._client = self._config.client()
        self._rpc = FirestoreRpc(self._config.region, self._config.max_write_attempts)
        self._customers = CustomerCache(self._lookup, self._config.product_refresh_seconds)

    def _lookup(self, customer_id: str) -> str | None:
        if not valid_id(customer_id):  # never build a path from an unvalidated string
            return None
        ref = self._client.collection("paynowCustomers").document(customer_id)
        snap = self._rpc.call(lambda: ref.get(timeout=RPC_TIMEOUT, retry=None))
        uid = snap.get("uid") if snap.exists else None
        return uid if valid_id(uid) else None  # a malformed mapping is no mapping

    def process(self, event: Event) -> Iterator[Any]:
        if not needs_uid(event.envelope):  # reversals use their order's uid; ignored types need none
            yield event
            return
        customer = event.envelope["data"].get("customer") or {}
        try:
            uid = resolve_uid(customer, self._customers.uid)
        except Unavailable as exc:  # transient: released for redelivery (acking read) or retried by the runner
            if not self._config.release_transient:
                raise
            log(logging.WARNING, "event released for redelivery", eventId=event.envelope["eventId"],
                reason=f"customer lookup: {exc}"[:300], region=self._config.region)
            yield beam.pvalue.TaggedOutput(RELEASE, event.message)
            return
        except WriteFailed as exc:
            verdict, reason = Verdict.WRITE_FAILED, f"customer lookup failed: {exc}"
        except Exception as exc:  # never let one element kill the job
            log(logging.ERROR, "customer lookup crashed", eventId=event.envelope["eventId"], error=repr(exc))
            verdict, reason = Verdict.WRITE_FAILED, f"customer lookup crashed: {exc!r}"[:500]
        else:
            if uid:
                yield dataclasses.replace(event, uid=uid)
                return
            verdict = Verdict.UNMAPPED_CUSTOMER
            reason = f"no valid uid for PayNow customer {customer.get('id')!r}"[:500]
        yield beam.pvalue.TaggedOutput(DLQ, reject(event, verdict, reason, STEP))

    def teardown(self) -> None:
        self._client.close()


class ResolveAccount(beam.PTransform[PCollection[Event], DoOutputsTuple]):
    """Event -> (`resolved`: Event, uid set for orders and cycles; `dlq`: unmapped_customer / write_failed;
    `release`: Message whose lookup met a transient fault, to hand back to Pub/Sub)."""

    def __init__(self, config: FirestoreConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, events: PCollection[Event]) -> DoOutputsTuple:
        lookup = beam.ParDo(_ResolveFn(self._config))
        outputs: DoOutputsTuple = (
            events | "Lookup" >> lookup.with_outputs(DLQ, RELEASE, main=RESOLVED))
        return outputs
