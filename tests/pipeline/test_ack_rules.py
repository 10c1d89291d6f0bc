"""What each graph does with a fault that is not permanent: the acking graph releases, the native one raises."""
from __future__ import annotations

from typing import Any

import pytest

from pipeline.commit_plan import Write
from pipeline.dead_letters import DeadLetterUnpublished, _PublishFn
from pipeline.firestore_transport import FirestoreConfig, Unavailable, WriteFailed
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


def publish_fn(on_unpublished: Any, recorded: list[list[Write]] | None = None,
               record_error: Exception | None = None) -> _PublishFn:
    """The DLQ step without clients: records go to `recorded` (or fail with `record_error`)."""
    fn = _PublishFn("projects/p/topics/dlq", FirestoreConfig("p", region="us-central1"), on_unpublished, scan=False)
    fn._metrics = RegionMetrics("us-central1")

    def commit(writes: list[Write]) -> None:
        if record_error is not None:
            raise record_error
        (recorded if recorded is not None else []).append(writes)

    fn._commit = commit
    return fn


def test_native_graph_fails_the_bundle_when_a_dead_letter_cannot_be_published() -> None:
    fn = publish_fn(None)
    rejected = Rejected(f.message(f.order("x", "x", [(f.P20, 1)])), "unmapped_customer", "r", "ResolveAccount")
    fn._publish_all = lambda batch: list(batch)  # type: ignore[method-assign]
    with pytest.raises(DeadLetterUnpublished):
        list(fn.process([rejected]))


def test_acking_graph_hands_back_what_it_could_not_dead_letter_and_acks_the_rest() -> None:
    handed_back: list[list[Message]] = []
    fn = publish_fn(handed_back.append)
    published, unpublished = (
        Rejected(f.message(f.order(i, i, [(f.P20, 1)])), "unmapped_customer", "r", "ResolveAccount", event_id=i)
        for i in ("a", "b"))
    fn._publish_all = lambda batch: [unpublished]  # type: ignore[method-assign]
    assert list(fn.process([published, unpublished])) == [published.message]
    assert handed_back == [[unpublished.message]]


def test_a_dead_letter_whose_record_fails_is_neither_published_nor_acked() -> None:
    handed_back: list[list[Message]] = []
    fn = publish_fn(handed_back.append, record_error=Unavailable("Firestore down after 5 attempts"))
    published: list[list[Rejected]] = []
    fn._publish_all = lambda batch: published.append(batch) or []  # type: ignore[func-returns-value,method-assign]
    rejected = Rejected(f.message(f.order("a", "a", [(f.P20, 1)])), "unmapped_customer", "r", "ResolveAccount",
                        event_id="a")
    assert list(fn.process([rejected])) == []  # nothing to acknowledge
    assert handed_back == [[rejected.message]] and published == []
    with pytest.raises(DeadLetterUnpublished, match="1 dead letters not recorded"):
        list(publish_fn(None, record_error=WriteFailed("PermissionDenied")).process([rejected]))


def test_a_dead_letter_is_recorded_before_it_is_published_and_acked() -> None:
    recorded: list[list[Write]] = []
    fn = publish_fn(None, recorded)
    order: list[str] = []
    fn._commit = lambda writes: (order.append("record"), recorded.append(writes))[0]  # type: ignore[func-returns-value]
    fn._publish_all = lambda batch: order.append("publish") or []  # type: ignore[func-returns-value,method-assign]
    rejected = Rejected(f.message(f.order("a", "a", [(f.P20, 1)])), "unmapped_customer", "r", "ResolveAccount",
                        event_id="a")
    assert list(fn.process([rejected])) == [rejected.message]
    assert order == ["record", "publish"]
    [[write]] = recorded
    assert write.path == "deadLetters/a" and write.fields["state"] == "open"
