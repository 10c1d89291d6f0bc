"""The batching publisher: one ordering key per RPC, per-key order, bounded waits, failures and health."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from ingress.publisher import BatchingPublisher, Message, PublishUnavailable


class FakeSender:
    """Records each RPC's messages; `gate` holds RPCs until released, `fail` makes them raise."""

    def __init__(self) -> None:
        self.rpcs: list[list[Message]] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.delay = 0.0
        self.probes = 0
        self.closed = False
        self.count = 0

    async def send(self, messages: Sequence[Message], timeout: float) -> Sequence[str]:
        self.rpcs.append(list(messages))
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        ids = [str(self.count + i) for i in range(len(messages))]
        self.count += len(messages)
        return ids

    async def probe(self, timeout: float) -> None:
        self.probes += 1
        if self.fail is not None:
            raise self.fail

    async def close(self) -> None:
        self.closed = True


def msg(key: str, n: int) -> tuple[bytes, dict[str, str], str]:
    return f"{key}-{n}".encode(), {"n": str(n)}, key


def test_concurrent_publishes_become_one_rpc_per_ordering_key() -> None:
    async def scenario() -> tuple[FakeSender, list[str]]:
        sender = FakeSender()
        publisher = BatchingPublisher(sender, linger=0.005)
        await publisher.start()
        ids = await asyncio.gather(*(publisher.publish(*msg(key, n)) for n in range(3) for key in "abc"))
        await publisher.close()
        return sender, list(ids)

    sender, ids = asyncio.run(scenario())
    assert sorted(ids, key=int) == [str(i) for i in range(9)] and len(set(ids)) == 9
    assert len(sender.rpcs) == 3
    for rpc in sender.rpcs:
        assert len({key for _, _, key in rpc}) == 1  # Pub/Sub's rule: one ordering key per PublishRequest
        assert [data for data, _, _ in rpc] == [f"{rpc[0][2]}-{n}".encode() for n in range(3)]
    assert sender.closed


def test_a_key_waits_for_its_inflight_rpc_other_keys_do_not() -> None:
    async def scenario() -> list[list[Message]]:
        sender = FakeSender()
        sender.gate = asyncio.Event()
        publisher = BatchingPublisher(sender, linger=0)
        await publisher.start()
        first = asyncio.create_task(publisher.publish(*msg("a", 0)))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(publisher.publish(*msg("a", 1)))
        other = asyncio.create_task(publisher.publish(*msg("b", 0)))
        await asyncio.sleep(0.01)
        in_flight = [list(r) for r in sender.rpcs]
        sender.gate.set()
        await asyncio.gather(first, second, other)
        await publisher.close()
        return [*in_flight, *sender.rpcs[len(in_flight):]]

    rpcs = asyncio.run(scenario())
    assert rpcs[0] == [msg("a", 0)]
    assert rpcs[1] == [msg("b", 0)]  # sent while a-0 was in flight
    assert rpcs[2] == [msg("a", 1)]  # only after a-0 completed: per-key order


def test_failed_rpc_fails_its_callers_and_the_key_is_not_paused() -> None:
    failures: list[int] = []

    async def scenario() -> tuple[list[object], bool, int, str]:
        sender = FakeSender()
        sender.fail = RuntimeError("UNAVAILABLE")
        publisher = BatchingPublisher(sender, linger=0.002, on_failure=failures.append, probe_interval=60)
        await publisher.start()
        results = await asyncio.gather(*(publisher.publish(*msg("k", n)) for n in range(2)), return_exceptions=True)
        healthy_after_failure, paused = publisher.healthy, publisher.paused_keys
        sender.fail = None
        next_id = await publisher.publish(*msg("k", 2))  # the same key publishes again at once
        assert publisher.healthy
        await publisher.close()
        return results, healthy_after_failure, paused, next_id

    results, healthy, paused, next_id = asyncio.run(scenario())
    assert all(isinstance(r, PublishUnavailable) and "UNAVAILABLE" in str(r) for r in results)
    assert not healthy and paused == 0 and next_id == "0"
    assert failures == [2]


def test_rpc_slower_than_the_timeout_fails_within_the_timeout() -> None:
    async def scenario() -> tuple[Exception | None, float]:
        sender = FakeSender()
        sender.delay = 5.0
        publisher = BatchingPublisher(sender, linger=0, timeout=0.2, probe_interval=60)
        await publisher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await publisher.publish(*msg("k", 0))
        except PublishUnavailable as exc:
            error: Exception | None = exc
        else:
            error = None
        elapsed = loop.time() - started
        sender.delay = 0
        await publisher.close()
        return error, elapsed

    error, elapsed = asyncio.run(scenario())
    assert isinstance(error, PublishUnavailable)
    assert 0.15 < elapsed < 2.0


def test_message_queued_behind_a_slow_rpc_of_its_key_still_fails_within_its_timeout() -> None:
    async def scenario() -> tuple[list[object], float]:
        sender = FakeSender()
        sender.gate = asyncio.Event()
        publisher = BatchingPublisher(sender, linger=0, timeout=0.3, probe_interval=60)
        await publisher.start()
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(publisher.publish(*msg("k", 0)))
        await asyncio.sleep(0.01)
        queued_at = loop.time()
        second = asyncio.create_task(publisher.publish(*msg("k", 1)))
        results = await asyncio.gather(first, second, return_exceptions=True)
        elapsed = loop.time() - queued_at
        sender.gate.set()
        await publisher.close()
        return list(results), elapsed

    results, elapsed = asyncio.run(scenario())
    assert all(isinstance(r, PublishUnavailable) for r in results)
    assert elapsed < 0.3 + 0.7  # its own 0.3 s timeout, with room for a loaded machine


def test_probe_restores_health_without_traffic() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        sender = FakeSender()
        sender.fail = RuntimeError("down")
        publisher = BatchingPublisher(sender, linger=0, probe_interval=0.02)
        await publisher.start()
        with pytest.raises(PublishUnavailable):
            await publisher.publish(*msg("k", 0))
        await asyncio.sleep(0.1)
        still_down = publisher.healthy
        sender.fail = None
        await asyncio.sleep(0.1)
        recovered = publisher.healthy
        await publisher.close()
        return still_down, recovered, sender.probes

    still_down, recovered, probes = asyncio.run(scenario())
    assert not still_down and recovered and probes >= 2


def test_close_flushes_what_is_queued_and_then_refuses() -> None:
    async def scenario() -> tuple[list[str], Exception | None]:
        sender = FakeSender()
        publisher = BatchingPublisher(sender, linger=0.05)
        await publisher.start()
        pending = [asyncio.create_task(publisher.publish(*msg(k, 0))) for k in "xyz"]
        await asyncio.sleep(0)
        await publisher.close()
        ids = [task.result() for task in pending]  # all confirmed before close returned
        try:
            await publisher.publish(*msg("x", 1))
        except PublishUnavailable as exc:
            return ids, exc
        return ids, None

    ids, refused = asyncio.run(scenario())
    assert sorted(ids) == ["0", "1", "2"]
    assert isinstance(refused, PublishUnavailable)


def test_batches_are_capped_at_max_messages() -> None:
    async def scenario() -> list[int]:
        sender = FakeSender()
        publisher = BatchingPublisher(sender, max_messages=4, linger=0.01)
        await publisher.start()
        await asyncio.gather(*(publisher.publish(*msg("k", n)) for n in range(10)))
        await publisher.close()
        return [len(rpc) for rpc in sender.rpcs]

    assert asyncio.run(scenario()) == [4, 4, 2]


def test_a_sender_that_never_returns_still_fails_the_caller_in_bounded_time() -> None:
    class Hanging(FakeSender):
        async def send(self, messages: Sequence[Message], timeout: float) -> Sequence[str]:
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.5
            while loop.time() < end:  # swallows the RPC deadline's cancellation, like a wedged transport
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(end - loop.time())
            return []

    async def scenario() -> float:
        publisher = BatchingPublisher(Hanging(), linger=0, timeout=0.1, probe_interval=60)
        await publisher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PublishUnavailable):
            await publisher.publish(*msg("k", 0))
        return loop.time() - started

    assert 1.0 < asyncio.run(scenario()) < 2.4  # timeout + the 1 s safety net, before the RPC returns
