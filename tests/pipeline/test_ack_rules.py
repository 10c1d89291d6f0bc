"""What each graph does with a fault that is not permanent: the acking graph releases, the native one raises."""
from __future__ import annotations

from typing import Any

import pytest

from pipeline.dead_letters import DeadLetterUnpublished, _PublishFn
from pipeline.firestore_transport import FirestoreConfig, Unavailable
from pipeline.model import Event, Message, Rejected
from pipeline.observability import RegionMetrics
from pipeline.sink import DLQ, RELEASE, UNAVAILABLE, Applied, _ApplyFn
from tests.pipeline import factories as f


class _Writer:
    def __init__(self, statuses: list[str]) -> None:
        self._statuses = statuses

    def apply(self, events: list[Event]) -> list[Applied]:
        return [Applied(e, s, "Unavailable after 5 attempts") for e, s in zip(events, self._statuses, strict=True)]


def apply_fn(release: bool, statuses: list[str]) -> _ApplyFn:
    fn = _ApplyFn(FirestoreConfig("p", region="us-central1", release_transient=release))
    fn._writer = _Writer(statuses)  # type: ignore[assignment]
    fn._metrics = RegionMetrics("us-central1")
    return fn


def events(*ids: str) -> list[Event]:
    return [Event(f.message(f.order(i, i, [(f.P20, 1)])), f.envelope(f.order(i, i, [(f.P20, 1)])), "u1") for i in ids]


def tags(outputs: list[Any]) -> list[str]:
    return [getattr(o, "tag", "committed") for o in outputs]


def test_acking_graph_releases_a_transient_fault_and_never_dead_letters_it() -> None:
    out = list(apply_fn(True, [UNAVAILABLE, "applied", "write_failed"]).process(events("a", "b", "c")))
    assert tags(out) == [RELEASE, "committed", DLQ]


def test_native_graph_fails_the_bundle_so_the_runner_retries_it_from_its_checkpoint() -> None:
    with pytest.raises(Unavailable):
        list(apply_fn(False, ["applied", UNAVAILABLE]).process(events("a", "b")))


def test_native_graph_fails_the_bundle_when_a_dead_letter_cannot_be_published() -> None:
    fn = _PublishFn("projects/p/topics/dlq", "us-central1", on_unpublished=None)
    fn._metrics = RegionMetrics("us-central1")
    rejected = Rejected(f.message(f.order("x", "x", [(f.P20, 1)])), "unmapped_customer", "r", "ResolveAccount")
    fn._publish_all = lambda batch: list(batch)  # type: ignore[method-assign]
    with pytest.raises(DeadLetterUnpublished):
        list(fn.process([rejected]))


def test_acking_graph_hands_back_what_it_could_not_dead_letter_and_acks_the_rest() -> None:
    handed_back: list[list[Message]] = []
    fn = _PublishFn("projects/p/topics/dlq", "us-central1", on_unpublished=handed_back.append)
    fn._metrics = RegionMetrics("us-central1")
    published, unpublished = (
        Rejected(f.message(f.order(i, i, [(f.P20, 1)])), "unmapped_customer", "r", "ResolveAccount", event_id=i)
        for i in ("a", "b"))
    fn._publish_all = lambda batch: [unpublished]  # type: ignore[method-assign]
    assert list(fn.process([published, unpublished])) == [published.message]
    assert handed_back == [[unpublished.message]]
