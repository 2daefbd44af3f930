"""The shared consume loop with a handler of its own: what any new consumer gets for free.

The events and sentiment handlers are covered by their own tests; these pin the loop's
promises to a handler that is neither: dead letters before the commit, the commit only
after the handler's writes, a failing dependency retried with the partitions paused and
health NOT_SERVING meanwhile, and a stop during that back-off abandoning the batch
uncommitted. A fake consumer stands in for kafka-python (pure logic); the real broker is
exercised by the services' integration and fault suites.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from event_records import Rec
from kafka import TopicPartition

from recsys.consume import ConsumeLoop, Dependencies, LoopMetrics
from recsys.errors import PermissionDeniedError, UnavailableError
from recsys.health import HealthState
from recsys.kafka_codec import REASON_HEADER, RawRecord, Rejection
from recsys.settings import ConsumerSettings

TP = TopicPartition("in", 0)


def rec(offset: int, value: bytes) -> Rec:
    return Rec("in", 0, offset, b"k", value, None)


@dataclass
class Plan:
    good: list[bytes]
    rejected: list[tuple[RawRecord, Rejection]]
    offsets: Mapping[tuple[str, int], int]


@dataclass
class UpperHandler:
    """Writes the upper-cased value of each good record; ``b"bad"`` is rejected."""

    failures: int = 0  # how many writes fail before one succeeds
    written: list[bytes] = field(default_factory=list)
    seen_by_commit: list[int] = field(default_factory=list)
    dependencies: tuple[str, ...] = ("sink",)
    pipelined: bool = False

    def plan(self, records: list[RawRecord]) -> Plan:
        good: list[bytes] = []
        rejected: list[tuple[RawRecord, Rejection]] = []
        for r in records:
            if r.value == b"bad":
                rejected.append((r, Rejection("bad_value", "the value is 'bad'")))
            else:
                good.append(r.value or b"")
        last = max(r.offset for r in records)
        return Plan(good, rejected, {(records[0].topic, records[0].partition): last + 1})

    def send(self, plan: Plan, deps: Dependencies) -> None:
        return None

    def complete(self, plan: Plan, sent: None, deps: Dependencies, stop: threading.Event) -> bool:
        return deps.retry("sink", stop, lambda: self._write(plan.good)) is not None

    def _write(self, values: list[bytes]) -> int:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("sink down")
        self.written += [v.upper() for v in values]
        return len(values)

    def probe(self) -> dict[str, bool]:
        return {"sink": True}


class FakeConsumer:
    """Scripted polls; records commits with how much the handler had written by then."""

    def __init__(self, batches: list[list[Rec]], handler: UpperHandler) -> None:
        self.batches = batches
        self.handler = handler
        self.committed: list[int] = []
        self.paused_now: set[TopicPartition] = set()
        self.ever_paused = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Rec]]:
        if self.paused_now:
            return {}
        return {TP: self.batches.pop(0)} if self.batches else {}

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.committed.append(offsets[TP].offset)
        self.handler.seen_by_commit.append(len(self.handler.written))

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_now |= set(tps)
        self.ever_paused = True

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_now -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass


class FakeFuture:
    def get(self, timeout: float | None = None) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> FakeFuture:
        self.sent.append((topic, value, dict(headers)))
        return FakeFuture()

    def flush(self, timeout: float | None = None) -> None:
        pass


class _Counter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = {}

    def labels(self, *values: str) -> _Child:
        return _Child(self, values)


@dataclass
class _Child:
    parent: _Counter
    key: tuple[str, ...]

    def inc(self, n: float = 1) -> None:
        self.parent.counts[self.key] = self.parent.counts.get(self.key, 0) + n


class _Gauge:
    value = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        pass


def make(
    batches: list[list[Rec]], failures: int = 0
) -> tuple[ConsumeLoop[Plan], UpperHandler, FakeConsumer, FakeProducer, HealthState]:
    handler = UpperHandler(failures=failures)
    consumer = FakeConsumer(batches, handler)
    producer = FakeProducer()
    health = HealthState()
    health.set_serving(True)
    metrics = LoopMetrics(
        dead_lettered=_Counter(),
        dependency_errors=_Counter(),
        degraded=_Gauge(),
        consumer_restarts=_Counter(),
        batch_seconds=_Gauge(),
    )
    settings = ConsumerSettings(
        topic="in", dlq_topic="in.dlq", backoff_initial_s=0.01, backoff_max_s=0.02
    )
    loop = ConsumeLoop(settings, handler, consumer, producer, metrics, health, commit_wait=True)
    return loop, handler, consumer, producer, health


def test_a_new_handler_gets_dead_letters_before_the_commit_after_its_writes() -> None:
    loop, handler, consumer, producer, _ = make([[rec(0, b"a"), rec(1, b"bad"), rec(2, b"c")]])
    assert loop.step(threading.Event()) == 3
    assert handler.written == [b"A", b"C"]
    ((topic, value, headers),) = producer.sent
    assert (topic, value) == ("in.dlq", b"bad")
    assert headers[REASON_HEADER] == b"bad_value: the value is 'bad'"
    assert headers["x-original-offset"] == b"1"
    # one commit, past the whole batch, made once both writes were done
    assert consumer.committed == [3]
    assert handler.seen_by_commit == [2]
    assert loop.dead_lettered == 1 and loop.batches == 1


def test_a_failing_dependency_is_retried_paused_and_not_serving_then_committed() -> None:
    loop, handler, consumer, _, health = make([[rec(0, b"a")]], failures=2)
    seen_serving: list[bool] = []
    original = handler._write

    def watching(values: list[bytes]) -> int:
        seen_serving.append(health.serving)
        return original(values)

    handler._write = watching  # type: ignore[method-assign]
    assert loop.step(threading.Event()) == 1
    assert handler.written == [b"A"]  # written once, after two failures
    assert seen_serving == [True, False, False]  # NOT_SERVING while it failed
    assert health.serving  # and SERVING again once it answered
    assert consumer.ever_paused and not consumer.paused_now  # paused, then resumed
    assert consumer.committed == [1]
    assert loop.metrics.dependency_errors.counts == {("sink",): 2}


def test_stopping_during_the_back_off_abandons_the_batch_uncommitted() -> None:
    loop, handler, consumer, _, health = make([[rec(0, b"a")]], failures=10**6)
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        loop.step(stop)
    finally:
        timer.cancel()
    assert handler.written == []
    assert consumer.committed == []  # replayed by the next owner
    assert not health.serving


def test_a_permission_denied_dependency_stops_the_loop_instead_of_retrying_forever() -> None:
    """A refused ACL fails the same way on every try: the loop re-raises it at once
    (the service exits naming the user and command) and commits nothing."""
    loop, handler, consumer, _, health = make([[rec(0, b"a")]])

    def denied(values: list[bytes]) -> int:
        raise PermissionDeniedError("Redis refused ACL user 'recsys-events': NOPERM zadd")

    handler._write = denied  # type: ignore[method-assign]
    with pytest.raises(PermissionDeniedError, match="recsys-events"):
        loop.step(threading.Event())
    assert consumer.committed == []
    assert not health.serving
    assert loop.metrics.dependency_errors.counts.get(("sink",)) == 1
