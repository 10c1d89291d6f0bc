"""Leases of the acking read: the ack ids in flight in this process, extended until acked or handed back."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import google.cloud.pubsub_v1 as pubsub_v1

from pipeline.observability import log

DEFAULT_ACK_DEADLINE = 60
ACK_CHUNK = 2500
RELEASE_DELAY = 5  # seconds until a released message is redelivered: a pause, not a spin, while a fault lasts


class Leases:
    """Ack ids in flight in this process; one daemon thread keeps extending their ack deadline until released."""

    def __init__(self, subscription: str) -> None:
        self.subscription = subscription
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._client: pubsub_v1.SubscriberClient | None = None
        self._thread: threading.Thread | None = None
        self._deadline = DEFAULT_ACK_DEADLINE

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ack_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.update(ack_ids)
            if self._thread is None:
                self._client = pubsub_v1.SubscriberClient()
                self._deadline = self._subscription_deadline(self._client)
                self._thread = threading.Thread(target=self._extend_forever, name="lease-extender", daemon=True)
                self._thread.start()

    def release(self, ack_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.difference_update(ack_ids)

    def hand_back(self, ack_ids: list[str], delay: int = RELEASE_DELAY) -> None:
        """Stop extending these leases and ask for redelivery in `delay` seconds (a nack when 0)."""
        self.release(ack_ids)
        client = self._client or pubsub_v1.SubscriberClient()
        for start in range(0, len(ack_ids), ACK_CHUNK):
            try:
                client.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ack_ids[start:start + ACK_CHUNK],
                    "ack_deadline_seconds": delay}, timeout=10)
            except Exception as exc:  # not extended any more: redelivered when the current deadline lapses
                log(logging.WARNING, "handing leases back failed", error=repr(exc)[:300])

    def return_all(self) -> int:
        """Give every in-flight message back for immediate redelivery (ack deadline 0); returns how many."""
        with self._lock:
            ids, self._ids = list(self._ids), set()
        client = self._client or pubsub_v1.SubscriberClient()
        for start in range(0, len(ids), ACK_CHUNK):
            try:
                client.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ids[start:start + ACK_CHUNK],
                    "ack_deadline_seconds": 0}, timeout=10)
            except Exception as exc:  # they are redelivered when their deadline lapses instead
                log(logging.WARNING, "returning leases failed", error=repr(exc)[:300])
        return len(ids)

    def _subscription_deadline(self, client: pubsub_v1.SubscriberClient) -> int:
        """Extend by the subscription's own ack deadline, so a dead worker's leases lapse no later than usual."""
        try:
            sub = client.get_subscription(request={"subscription": self.subscription}, timeout=10)
            return max(10, int(sub.ack_deadline_seconds))
        except Exception as exc:
            log(logging.WARNING, "subscription ack deadline unknown", error=repr(exc)[:300])
            return DEFAULT_ACK_DEADLINE

    def _extend_forever(self) -> None:
        while True:
            time.sleep(self._deadline / 3)
            with self._lock:
                ids = list(self._ids)
            for start in range(0, len(ids), ACK_CHUNK):
                try:
                    assert self._client is not None
                    self._client.modify_ack_deadline(request={
                        "subscription": self.subscription, "ack_ids": ids[start:start + ACK_CHUNK],
                        "ack_deadline_seconds": self._deadline}, timeout=10)
                except Exception as exc:  # expired ids or a blip: the next round or a redelivery covers it
                    log(logging.WARNING, "lease extension failed", error=repr(exc)[:300])


_leases: dict[str, Leases] = {}
_leases_lock = threading.Lock()


def leases_for(subscription: str) -> Leases:
    """The process-wide lease registry of a subscription (shared by the pull and the ack steps)."""
    with _leases_lock:
        if subscription not in _leases:
            _leases[subscription] = Leases(subscription)
        return _leases[subscription]
