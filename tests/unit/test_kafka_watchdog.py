"""The consumer start-up / stall guards shared by the events and sentiment services."""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka import TopicPartition

from recsys.consume import ProgressWatchdog, assigned_lag, group_joined, probe_stall
from recsys.kafka_io import wait_for_partitions
from services.events.config import load_settings as load_events_settings
from services.events.consumer import EventsConsumer
from services.sentiment.config import load_settings as load_sentiment_settings

TP0 = TopicPartition("t", 0)


def test_watchdog_reports_a_join_that_never_completes_after_the_stall_time() -> None:
    dog = ProgressWatchdog(20.0, now=0.0)
    assert dog.check(10.0, joined=False, lagging=None) is None
    assert not dog.due(19.9)
    assert dog.due(20.0)
    assert dog.check(20.0, joined=False, lagging=None) == "join"


def test_watchdog_reports_lag_without_progress_but_not_an_idle_member() -> None:
    dog = ProgressWatchdog(20.0, now=0.0)
    assert dog.check(25.0, joined=True, lagging=False) is None  # idle and caught up: fine
    assert dog.check(30.0, joined=True, lagging=True) is None  # clock restarted at 25
    assert dog.check(45.0, joined=True, lagging=True) == "no_progress"
    dog.progressed(46.0)
    assert not dog.due(50.0)


def test_watchdog_disabled_by_zero() -> None:
    dog = ProgressWatchdog(0.0, now=0.0)
    assert not dog.due(1e9)
    assert dog.check(1e9, joined=False, lagging=True) is None


class _Cluster:
    def __init__(self, leaders: dict[int, int | None]) -> None:
        self.leaders = leaders

    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        return self.leaders.get(tp.partition)


class _Client:
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster


class _Coordinator:
    def __init__(self, unknown: bool = False, rejoin: bool = False) -> None:
        self.unknown, self.rejoin = unknown, rejoin

    def coordinator_unknown(self) -> bool:
        return self.unknown

    def need_rejoin(self) -> bool:
        return self.rejoin


class FakeConsumer:
    """Just enough of KafkaConsumer for the guards; records what it was asked."""

    def __init__(
        self,
        leaders: dict[int, int | None] | None = None,
        *,
        assignment: set[TopicPartition] | None = None,
        ends: dict[TopicPartition, int] | None = None,
        positions: dict[TopicPartition, int] | None = None,
        coordinator: _Coordinator | None = None,
    ) -> None:
        self.leaders: dict[int, int | None] = {0: 0, 1: 0} if leaders is None else leaders
        self._client = _Client(_Cluster(self.leaders))
        self._coordinator = coordinator or _Coordinator()
        self._assignment = assignment or set()
        self.ends = ends or {}
        self.positions = positions or {}
        self.closed = False
        self.subscribed: list[str] = []
        self.async_commits: list[Any] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.leaders)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def paused(self) -> set[TopicPartition]:
        return set()

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict[TopicPartition, int]:
        return {tp: self.ends.get(tp, 0) for tp in tps}

    def position(self, tp: TopicPartition, timeout_ms: int) -> int:
        return self.positions.get(tp, 0)

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.subscribed = list(topics)

    def close(self, autocommit: bool = False) -> None:
        self.closed = True

    def commit(self, offsets: Any) -> None:
        raise RuntimeError("Cannot block on net.run() from the IO thread itself.")

    def commit_async(self, offsets: Any) -> None:
        self.async_commits.append(offsets)


def test_wait_for_partitions_needs_a_leader_for_every_partition() -> None:
    assert not wait_for_partitions(FakeConsumer({0: 0, 1: -1}), "t", timeout_s=0)
    assert not wait_for_partitions(FakeConsumer({0: 0, 1: None}), "t", timeout_s=0)
    assert not wait_for_partitions(FakeConsumer({}), "t", timeout_s=0)
    assert wait_for_partitions(FakeConsumer({0: 0, 1: 3}), "t", timeout_s=0)  # broker id 0 counts


def test_wait_for_partitions_returns_false_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    assert not wait_for_partitions(FakeConsumer({0: -1}), "t", stop=stop)


def test_group_joined_and_assigned_lag() -> None:
    assert group_joined(FakeConsumer())
    assert not group_joined(FakeConsumer(coordinator=_Coordinator(unknown=True)))
    assert not group_joined(FakeConsumer(coordinator=_Coordinator(rejoin=True)))
    assert not assigned_lag(FakeConsumer())  # nothing assigned
    caught_up = FakeConsumer(assignment={TP0}, ends={TP0: 5}, positions={TP0: 5})
    assert not assigned_lag(caught_up)
    behind = FakeConsumer(assignment={TP0}, ends={TP0: 5}, positions={TP0: 2})
    assert assigned_lag(behind)


def test_probe_stall_feeds_the_consumers_state_to_the_watchdog() -> None:
    stuck_since = time.monotonic() - 60.0
    joining = FakeConsumer(coordinator=_Coordinator(rejoin=True))
    assert probe_stall(joining, ProgressWatchdog(30.0, stuck_since)) == "join"
    behind = FakeConsumer(assignment={TP0}, ends={TP0: 5}, positions={TP0: 2})
    assert probe_stall(behind, ProgressWatchdog(30.0, stuck_since)) == "no_progress"
    caught_up = FakeConsumer(assignment={TP0}, ends={TP0: 5}, positions={TP0: 5})
    assert probe_stall(caught_up, ProgressWatchdog(30.0, stuck_since)) is None


def test_consumers_refresh_metadata_every_few_seconds_by_default() -> None:
    """A group that assigned nothing on a fresh topic heals at the next refresh, not in 5 min."""
    assert load_events_settings({}).consumer.consumer_overrides()["metadata_max_age_ms"] == 5000
    assert load_sentiment_settings({}).consumer.consumer_overrides()["metadata_max_age_ms"] == 5000
    env = {"KAFKA_METADATA_MAX_AGE_MS": "2000", "EVENTS_STALL_TIMEOUT_S": "0"}
    settings = load_events_settings(env)
    assert settings.consumer.consumer_overrides()["metadata_max_age_ms"] == 2000
    assert settings.consumer.stall_timeout_s == 0


class _NoStore:
    round_trips = 0

    def ping(self) -> bool:
        return True


def test_events_revoke_commits_without_blocking_the_kafka_io_thread() -> None:
    """A blocking commit from the listener raises in kafka-python 3 and fails the rejoin."""
    consumer = FakeConsumer(assignment={TP0})
    loop = EventsConsumer(load_events_settings({}), consumer, None, _NoStore())  # type: ignore[arg-type]
    loop._pending[TP0] = 7
    loop.on_revoked([TP0])
    assert len(consumer.async_commits) == 1
    assert consumer.async_commits[0][TP0].offset == 7
    assert not loop._pending


def test_events_watchdog_rebuilds_a_consumer_stuck_joining() -> None:
    stuck = FakeConsumer(coordinator=_Coordinator(rejoin=True))
    fresh = FakeConsumer()
    settings = load_events_settings({"EVENTS_STALL_TIMEOUT_S": "0.01"})
    loop = EventsConsumer(settings, stuck, None, _NoStore(), consumer_factory=lambda: fresh)  # type: ignore[arg-type]
    loop.watchdog.reset(0.0)  # long ago
    assert loop.check_stall(threading.Event()) == "join"
    assert stuck.closed and loop.consumer is fresh and fresh.subscribed == [settings.consumer.topic]
    assert loop.restarts == 1
    assert loop.check_stall(threading.Event()) is None  # the clock restarted


def test_events_watchdog_leaves_a_caught_up_idle_member_alone() -> None:
    idle = FakeConsumer(assignment={TP0}, ends={TP0: 5}, positions={TP0: 5})
    settings = load_events_settings({"EVENTS_STALL_TIMEOUT_S": "0.01"})
    loop = EventsConsumer(settings, idle, None, _NoStore(), consumer_factory=FakeConsumer)  # type: ignore[arg-type]
    loop.watchdog.reset(0.0)
    assert loop.check_stall(threading.Event()) is None
    assert loop.consumer is idle and not idle.closed


def test_sentiment_watchdog_rebuilds_a_consumer_stuck_joining() -> None:
    from services.sentiment.consumer import SentimentConsumer

    stuck = FakeConsumer(coordinator=_Coordinator(unknown=True))
    fresh = FakeConsumer()
    settings = load_sentiment_settings({"SENTIMENT_STALL_TIMEOUT_S": "0.01"})
    loop = SentimentConsumer(
        settings,
        stuck,
        None,
        _NoStore(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        consumer_factory=lambda: fresh,
    )
    loop.watchdog.reset(0.0)
    assert loop.check_stall(threading.Event()) == "join"
    assert stuck.closed and loop.consumer is fresh and fresh.subscribed == [settings.consumer.topic]
    loop._pending[TP0] = 3
    loop.on_revoked([TP0])  # must not block (or raise) on kafka-python's IO thread
    assert fresh.async_commits and not loop._pending
