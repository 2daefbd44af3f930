"""The events loop's commit: sent without waiting, yet only after the writes, never backwards.

A fake consumer stands in for kafka-python (pure logic: what is committed when);
the real-broker behaviour is covered by the integration tests.
"""

from __future__ import annotations

import threading
from typing import Any

from event_records import Rec, click, rec
from kafka import TopicPartition
from kafka.errors import KafkaError

from recsys.store.memory import InMemoryFeatureStore
from services.events.config import load_settings
from services.events.consumer import EventsConsumer

TP = TopicPartition("t", 0)


def record(offset: int) -> Rec:
    return rec(click(event_id=f"e{offset}", item_id=f"i{offset % 3}"), offset)


class FakeConsumer:
    """Polls scripted batches; answers an async commit (as kafka-python does) in a later poll."""

    def __init__(self, batches: list[list[Rec]], store: InMemoryFeatureStore) -> None:
        self.batches = batches
        self.store = store
        self.sync: list[int] = []  # offsets committed with commit()
        self.sent: list[int] = []  # offsets sent with commit_async()
        self.answers: list[Any] = []  # what the next poll answers, in order (None: success)
        self._callbacks: list[tuple[Any, dict[TopicPartition, Any]]] = []
        self.applied_when_sent: list[int] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Rec]]:
        while self._callbacks and self.answers:
            callback, offsets = self._callbacks.pop(0)
            answer = self.answers.pop(0)
            callback(offsets, answer if answer is not None else object())
        return {TP: self.batches.pop(0)} if self.batches else {}

    def commit_async(self, offsets: dict[TopicPartition, Any], callback: Any) -> None:
        self.sent.append(offsets[TP].offset)
        self.applied_when_sent.append(self.store.counters().get("click", 0))
        self._callbacks.append((callback, offsets))

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.sync.append(offsets[TP].offset)

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


def make_loop(batches: list[list[Rec]]) -> tuple[EventsConsumer, FakeConsumer]:
    store = InMemoryFeatureStore()
    consumer = FakeConsumer(batches, store)
    settings = load_settings({"EVENTS_TOPIC": "t"})
    return EventsConsumer(settings, consumer, None, store), consumer


def test_loop_commit_is_sent_only_after_its_batch_is_applied_and_not_awaited() -> None:
    loop, consumer = make_loop([[record(0), record(1)], [record(2)], [record(3)]])
    stop = threading.Event()
    consumer.answers = [None, None]
    for _ in range(3):
        loop.step(stop)
    # each batch's commit is sent once its events are applied, and not awaited
    assert consumer.sent == [2, 3]
    assert consumer.applied_when_sent == [2, 3]
    assert consumer.sync == []
    loop.step(stop)  # an idle poll finishes the last batch and commits it synchronously
    assert consumer.sync == [4]
    assert loop.finish(stop)
    assert consumer.sync == [4]


def test_shutdown_commits_offsets_held_back_behind_an_unanswered_commit() -> None:
    loop, consumer = make_loop([[record(0)], [record(1)]])
    stop = threading.Event()
    for _ in range(3):  # no answers: the second batch's offsets wait in _pending
        loop.step(stop)
    assert consumer.sent == [1]
    assert loop.finish(stop)
    assert consumer.sync == [2]


def test_failed_async_commit_is_retried_synchronously_with_its_offsets() -> None:
    loop, consumer = make_loop([[record(0)], [record(1)], []])
    stop = threading.Event()
    consumer.answers = [KafkaError("coordinator moved")]
    loop.step(stop)  # applies batch 1, nothing to commit yet
    loop.step(stop)  # commits batch 1 (async)
    loop.step(stop)  # the failure arrives; batch 2 applied and committed synchronously
    assert consumer.sent == [1]
    assert consumer.sync == [2]  # includes what the failed commit carried (offsets only grow)


def test_late_answer_of_a_superseded_commit_is_ignored() -> None:
    """A synchronous commit supersedes an unanswered one; its late failure must not
    be taken for the failure of the next commit (which would force a needless retry)."""
    loop, consumer = make_loop([[record(0)], [record(1)], [record(2)], [record(3)], [record(4)]])
    stop = threading.Event()
    loop.step(stop)
    loop.step(stop)  # sends offset 1
    assert loop.finish(stop)  # a synchronous commit of everything (offset 2) supersedes it
    assert consumer.sync == [2]
    loop.step(stop)
    consumer.answers = [KafkaError("late failure of the commit of offset 1")]
    loop.step(stop)  # the stale failure arrives; offset 3 is sent
    loop.step(stop)  # offset 3 still unanswered: nothing to retry
    assert consumer.sent == [1, 3]
    assert consumer.sync == [2]


class RebalancingConsumer(FakeConsumer):
    """Its commits fail: first the coordinator is gone, then the group has rebalanced."""

    def __init__(self, batches: list[list[Rec]], store: InMemoryFeatureStore) -> None:
        super().__init__(batches, store)
        self.failures: list[Exception] = []
        self.paused_now: set[TopicPartition] = set()

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        super().commit(offsets)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_now |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_now -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass


def test_commit_rejected_by_a_rebalance_after_a_back_off_leaves_the_partitions_flowing() -> None:
    """Seen after a broker restart: the commit failed (back off: partitions paused), the
    retry was rejected because the group rebalanced, and the member stayed paused, so
    its new partitions were paused on assignment and it never fetched again."""
    from kafka.errors import CommitFailedError

    store = InMemoryFeatureStore()
    consumer = RebalancingConsumer([], store)
    settings = load_settings(
        {"EVENTS_TOPIC": "t", "EVENTS_BACKOFF_INITIAL_S": "0.01", "EVENTS_BACKOFF_MAX_S": "0.01"}
    )
    loop = EventsConsumer(settings, consumer, None, store)
    consumer.failures = [KafkaError("coordinator not available"), CommitFailedError("rebalanced")]
    loop._pending[TP] = 5
    assert loop._commit(threading.Event()) is False  # the new owner replays
    assert consumer.paused_now == set()
    loop.on_assigned([TP])  # the rejoin hands the partition back: it must not be paused
    assert consumer.paused_now == set()
