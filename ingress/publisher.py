"""Batching async publisher: one flusher task turns concurrent publishes into few Pub/Sub `Publish` RPCs.

Pub/Sub requires every message of one PublishRequest to carry the same ordering key ("All PubsubMessages
published in a given PublishRequest must specify the same ordering_key value", google.pubsub.v1
PubsubMessage.ordering_key; the service answers FAILED_PRECONDITION "In a single publish request, all messages
must have no ordering key or they must all have the same ordering key" otherwise). So the flusher groups what
it gathered by key and sends the groups concurrently over one grpc.aio channel, at most one RPC per key in
flight: a key's later messages wait for its earlier RPC, which keeps per-key order within this process.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("ingress.publisher")

Message = tuple[bytes, dict[str, str], str]
"""(data, attributes, ordering_key) as handed to a Sender."""

class PublishUnavailable(Exception):
    """The publish was not confirmed (Pub/Sub error or timeout, or the publisher is closing)."""

class Sender(Protocol):
    """Sends one Publish RPC (all messages share an ordering key) and returns the message ids in order."""

    async def send(self, messages: Sequence[Message], timeout: float) -> Sequence[str]: ...

    async def probe(self, timeout: float) -> None: ...

    async def close(self) -> None: ...

class Publisher(Protocol):
    """What the app needs from a publisher; tests substitute their own."""

    @property
    def healthy(self) -> bool: ...

    @property
    def paused_keys(self) -> int: ...

    async def start(self) -> None: ...

    async def publish(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str: ...

    async def close(self) -> None: ...

@dataclass(slots=True)
class _Pending:
    message: Message
    deadline: float
    future: asyncio.Future[str]

class BatchingPublisher:
    """Gathers concurrent publishes into per-ordering-key Publish RPCs with a bounded confirmation time.

    Failure handling: when an RPC fails, its messages' callers get PublishUnavailable (the webhook answers 503
    and PayNow re-sends) and the key is usable again at once: the pipeline's result does not depend on arrival
    order, so holding back a customer's later events would only turn them into 503s too. Keys are therefore
    never paused (see `paused_keys`).
    """

    def __init__(self, sender: Sender, *, max_messages: int = 100, linger: float = 0.001, timeout: float = 5.0,
                 max_rpcs: int = 256, probe_interval: float = 1.0,
                 on_failure: Callable[[int], None] | None = None) -> None:
        if max_messages < 1 or timeout <= 0 or max_rpcs < 1:
            raise ValueError("max_messages, timeout and max_rpcs must be positive")
        self._sender = sender
        self._max_messages = max_messages
        self._linger = linger
        self._timeout = timeout
        self._max_rpcs = max_rpcs
        self._probe_interval = probe_interval
        self._on_failure = on_failure
        self._backlog: dict[str, deque[_Pending]] = {}
        self._queued = 0
        self._inflight: set[str] = set()
        self._rpcs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy = True
        self._closing = False

    @property
    def healthy(self) -> bool:
        """False from a failed RPC until the next successful RPC or probe."""
        return self._healthy and not self._closing

    @property
    def paused_keys(self) -> int:
        """Keys failed and waiting to be resumed: none, ever, because a failed key is released in the same
        step that fails its callers (what `resume_publish` does later in google-cloud-pubsub)."""
        return 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_loop(), name="publisher-flush"),
                       asyncio.create_task(self._probe_loop(), name="publisher-probe")]

    async def publish(self, data: bytes, attributes: dict[str, str], ordering_key: str) -> str:
        """Queue one message and wait for its message id; raise PublishUnavailable if it is not confirmed."""
        if self._closing:
            raise PublishUnavailable("publisher is closing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        pending = _Pending((data, attributes, ordering_key), loop.time() + self._timeout, future)
        queue = self._backlog.get(ordering_key)
        if queue is None:
            self._backlog[ordering_key] = queue = deque()
        queue.append(pending)
        self._queued += 1
        self._wake.set()
        try:
            async with asyncio.timeout(self._timeout + 1.0):  # a safety net: RPC deadlines normally end it first
                return await future
        except TimeoutError:
            raise PublishUnavailable("no confirmation within the publish timeout") from None

    async def close(self) -> None:
        """Stop taking messages, wait until every queued one is confirmed or failed, then close the sender."""
        self._closing = True
        while self._backlog or self._rpcs:
            self._wake.set()
            if self._rpcs:
                await asyncio.wait(set(self._rpcs))
            else:
                await asyncio.sleep(self._linger or 0.001)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sender.close()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._linger and self._queued < self._max_messages and not self._closing:
                await asyncio.sleep(self._linger)
            try:
                self._dispatch()
            except Exception:  # keep the only flusher alive; the callers' own timeouts answer them
                log.exception("publisher dispatch failed")

    def _dispatch(self) -> None:
        now = asyncio.get_running_loop().time()
        for key in list(self._backlog):
            if len(self._rpcs) >= self._max_rpcs:
                return  # an RPC's completion wakes the flusher again
            if key in self._inflight:
                continue
            queue = self._backlog[key]
            batch: list[_Pending] = []
            while queue and len(batch) < self._max_messages:
                pending = queue.popleft()
                self._queued -= 1
                if pending.future.done():  # the caller went away
                    continue
                if pending.deadline <= now:
                    pending.future.set_exception(PublishUnavailable("not sent within the publish timeout"))
                    continue
                batch.append(pending)
            if not queue:
                del self._backlog[key]
            if batch:
                if key:  # messages without a key have no order to keep
                    self._inflight.add(key)
                rpc = asyncio.create_task(self._send(key, batch))
                self._rpcs.add(rpc)
                rpc.add_done_callback(self._rpcs.discard)

    async def _send(self, key: str, batch: list[_Pending]) -> None:
        timeout = max(min(p.deadline for p in batch) - asyncio.get_running_loop().time(), 0.001)
        try:
            async with asyncio.timeout(timeout):
                ids = await self._sender.send([p.message for p in batch], timeout)
            if len(ids) != len(batch):
                raise RuntimeError(f"Publish returned {len(ids)} ids for {len(batch)} messages")
        except Exception as exc:  # any failure means "not confirmed": the caller answers 503
            self._fail(batch, exc)
        else:
            self._healthy = True
            for pending, message_id in zip(batch, ids, strict=True):
                if not pending.future.done():
                    pending.future.set_result(message_id)
        finally:
            self._inflight.discard(key)
            if self._backlog:
                self._wake.set()

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        self._healthy = False
        reason = f"{type(exc).__name__}: {exc}"[:300]
        log.error("publish failed", extra={"error": "publish_failed", "detail": reason, "messages": len(batch)})
        if self._on_failure is not None:
            self._on_failure(len(batch))
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(PublishUnavailable(reason))

    async def _probe_loop(self) -> None:
        """While unhealthy and idle, ask Pub/Sub whether it answers, so /readyz can recover without traffic."""
        while True:
            await asyncio.sleep(self._probe_interval)
            if self._healthy or self._rpcs or self._closing:
                continue
            try:
                await self._sender.probe(min(self._timeout, 2.0))
            except Exception as exc:
                log.debug("publisher probe failed", extra={"detail": f"{type(exc).__name__}"})
            else:
                self._healthy = True
