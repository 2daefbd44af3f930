"""The one consumer-group loop: poll, dead-letter, apply, then commit.

Every Kafka consumer of the platform (click events, feedback, and the ones to come)
is a :class:`BatchHandler` on :class:`ConsumeLoop`. The loop owns what must not
drift between them: waiting for the topic, subscribing with a rebalance listener,
the watchdog that rebuilds a stuck client, back-off with the partitions paused (so
the group keeps the member while a dependency is down), health and the degraded
gauge, dead letters with their reason, and committing offsets only after the
handler's writes succeeded. A handler only plans a batch (pure: decode, validate)
and applies it.

Delivery is at-least-once from Kafka; handlers make it effectively-once with
idempotent writes, so a crash anywhere replays at most the uncommitted batches.

A *pipelined* handler (events) sends batch N's writes without waiting, and the loop
polls and plans batch N+1 while the dependency runs them, then completes and commits
N before sending N+1: batches are still applied in poll order, one at a time, and an
offset is still committed only after its writes succeeded.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from recsys.errors import PermissionDeniedError, RecsysError
from recsys.health import HealthState
from recsys.kafka_codec import RawRecord, Rejection, dead_letter_headers
from recsys.kafka_io import wait_for_partitions
from recsys.settings import ConsumerSettings

_log = logging.getLogger("recsys.consume")
T = TypeVar("T")

# What a failing dependency raises: the store's and the model backend's own errors
# (RecsysError subclasses), a socket error, or the Kafka client's. Anything else is a
# bug and propagates; so does a PermissionDeniedError, which no retry can cure.
RETRYABLE: tuple[type[BaseException], ...] = (RecsysError, OSError, KafkaError)


def group_joined(consumer: Any) -> bool:
    """True when ``consumer`` knows its coordinator and has no rejoin pending.

    A member that is joined but owns nothing (more members than partitions) is
    healthy; one stuck half-way through a join is not. Reads kafka-python's
    coordinator defensively: anything unexpected counts as joined, so a probe
    never triggers a restart on its own.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:
        return True
    try:
        if coordinator.coordinator_unknown():
            return False
        return not coordinator.need_rejoin()
    except Exception:
        return True


#: The watchdog's stall reasons (the ``consumer_restarts`` metric's label values).
STALL_JOIN, STALL_NO_PROGRESS = "join", "no_progress"


class ProgressWatchdog:
    """Decides when a consumer looks stuck and should be closed and rebuilt.

    Two stalls seen with kafka-python 3.0: a group (re)join that never
    completes, and a member that owns partitions with lag but receives
    nothing. Both heal when the client is recreated; uncommitted work is
    replayed, which the callers tolerate. ``check`` is pure: the caller feeds
    it what it observed and acts on the reason it returns.
    """

    def __init__(self, stall_s: float, now: float) -> None:
        self.stall_s = stall_s
        self.reset(now)

    def reset(self, now: float) -> None:
        self._last_ok = now

    def progressed(self, now: float) -> None:
        self._last_ok = now

    def due(self, now: float) -> bool:
        """True once ``stall_s`` passed without progress: time to probe (possibly costly)."""
        return self.stall_s > 0 and now - self._last_ok >= self.stall_s

    def check(self, now: float, *, joined: bool, lagging: bool | None) -> str | None:
        """The stall reason when stuck for ``stall_s``, else None.

        ``joined``: membership complete; ``lagging``: assigned partitions have
        unread records (None: not assigned / not asked). A healthy state resets
        the clock; a stuck one only counts time.
        """
        if self.stall_s <= 0:
            return None
        if joined and not lagging:
            self._last_ok = now
            return None
        if now - self._last_ok < self.stall_s:
            return None
        return STALL_JOIN if not joined else STALL_NO_PROGRESS


def assigned_lag(consumer: Any, timeout_ms: int = 2000) -> bool:
    """True when some assigned, unpaused partition has records past the consumer's position.

    Makes one ListOffsets request (and a position lookup per partition), so
    only call it when a stall is suspected. A position that cannot be learnt
    while end offsets can counts as lag: the client is not making progress.
    """
    from kafka.errors import KafkaError

    paused = set(consumer.paused())
    assignment = [tp for tp in consumer.assignment() if tp not in paused]
    if not assignment:
        return False
    try:
        ends = consumer.end_offsets(assignment, timeout_ms=timeout_ms)
    except KafkaError:
        return False  # the broker is unreachable: a dependency outage, not a stall
    for tp in assignment:
        end = ends.get(tp)
        if not end:
            continue
        try:
            position = consumer.position(tp, timeout_ms=timeout_ms)
        except KafkaError:
            return True
        if position is None or position < end:
            return True
    return False


def probe_stall(consumer: Any, watchdog: ProgressWatchdog) -> str | None:
    """The watchdog's stall reason for ``consumer`` (None: not stuck).

    Asks the consumer whether it joined its group and, if so, whether its partitions have
    unread records: broker round trips, so call it only once ``watchdog.due``.
    """
    joined = group_joined(consumer)
    lagging = assigned_lag(consumer) if joined else None
    return watchdog.check(time.monotonic(), joined=joined, lagging=lagging)


# --- consumer-group mechanics shared by the services' consume loops ---------------------
# The events and sentiment consumers differ in what they do with a batch; how they stay in
# their group while backing off, commit, and dead-letter is the same and lives here.


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """Exponential back-off, doubling up to ``max_s``, forever."""
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * 2.0, max_s)


class RebalanceOwner(Protocol):
    def on_revoked(self, revoked: list[Any]) -> None: ...
    def on_assigned(self, assigned: list[Any]) -> None: ...


def rebalance_listener(owner: RebalanceOwner) -> Any:
    """A kafka-python rebalance listener forwarding to ``owner`` (which must not block)."""
    from kafka import ConsumerRebalanceListener

    class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python: untyped
        def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
            owner.on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
            owner.on_assigned(list(assigned))

    return _Listener()


def commit_on_revoke(consumer: Any, pending: dict[Any, int], revoked: Iterable[Any]) -> None:
    """Commit what was handled from partitions being lost, without waiting; forget them.

    kafka-python 3 runs listeners on its IO thread, where a blocking ``commit()``
    raises ("Cannot block on net.run() from the IO thread") and fails the whole
    rejoin; so the commit is sent without waiting. If it is lost, the next owner
    replays, which the services' idempotent writes turn into a no-op.
    """
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    revoked = list(revoked)
    offsets = {tp: pending[tp] for tp in revoked if tp in pending}
    if offsets:
        try:
            consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except (KafkaError, RuntimeError) as exc:
            _log.warning("commit on revoke failed", extra={"error": str(exc)})
    for tp in revoked:
        pending.pop(tp, None)


def pause_assignment(consumer: Any) -> None:
    assignment = list(consumer.assignment())
    if assignment:
        consumer.pause(*assignment)


def resume_assignment(consumer: Any) -> None:
    assignment = list(consumer.assignment())
    if assignment:
        consumer.resume(*assignment)


def poll_while_paused(consumer: Any, delay_s: float, stop: Any) -> bool:
    """Keep polling (so the group keeps us) for ``delay_s``; False when ``stop`` is set.

    The partitions are paused, but a poll may still return records fetched
    earlier: seek back over them so nothing is skipped.
    """
    from kafka.errors import KafkaError

    deadline = time.monotonic() + delay_s
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        try:
            polled = consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000))
        except KafkaError:
            stop.wait(min(remaining, 0.5))
            continue
        for tp, batch in polled.items():
            if batch:
                consumer.seek(tp, batch[0].offset)
    return False


def commit_pending(consumer: Any, pending: dict[Any, int]) -> bool:
    """Commit ``pending`` offsets of still-assigned partitions and clear them.

    Returns False when the group rebalanced (or is rebalancing: a retry cannot
    succeed until poll() rejoins): the new owner replays from the last committed
    offset. Any other KafkaError propagates, for the caller to back off and retry.
    """
    from kafka.errors import CommitFailedError, RebalanceInProgressError
    from kafka.structs import OffsetAndMetadata

    assignment = consumer.assignment()
    offsets = {
        tp: OffsetAndMetadata(offset, "", -1) for tp, offset in pending.items() if tp in assignment
    }
    try:
        if offsets:
            consumer.commit(offsets)
    except (CommitFailedError, RebalanceInProgressError) as exc:
        _log.warning("commit rejected after rebalance", extra={"error": str(exc)})
        pending.clear()
        return False
    pending.clear()
    return True


class PausedBackoff:
    """A consume loop's back-off on a failing dependency, with its partitions paused.

    While it lasts the loop keeps polling (so the group keeps the member) with every
    assigned partition paused, including partitions assigned meanwhile. Whatever ends it
    (the dependency answering, or the coordinator saying the group rebalanced) must
    :meth:`resume`: a member left paused never fetches its new partitions again.
    """

    def __init__(self) -> None:
        self.active = False

    def wait(self, consumer: Any, delay_s: float, stop: Any) -> bool:
        """Back off for ``delay_s`` while staying in the group; False when asked to stop."""
        if not self.active:
            self.active = True
            pause_assignment(consumer)
        return poll_while_paused(consumer, delay_s, stop)

    def resume(self, consumer: Any) -> None:
        if self.active:
            self.active = False
            resume_assignment(consumer)

    def on_assigned(self, consumer: Any, assigned: Sequence[Any]) -> None:
        """From the rebalance listener: partitions given during a back-off wait too."""
        if self.active and assigned:
            consumer.pause(*assigned)


def commit_until_done(
    consumer: Any,
    pending: dict[Any, int],
    backoff: PausedBackoff,
    stop: Any,
    delays: Iterator[float],
    on_error: Callable[[BaseException], None],
    on_ok: Callable[[], None],
) -> bool:
    """Commit ``pending``, backing off on Kafka errors until it is done (True).

    False when the group rebalanced (the new owner replays from the last commit) or when
    ``stop`` is set during a back-off. Both of the coordinator's answers end the back-off.
    """
    from kafka.errors import KafkaError

    while pending:
        try:
            committed = commit_pending(consumer, pending)
        except KafkaError as exc:
            on_error(exc)
            if not backoff.wait(consumer, next(delays), stop):
                return False
            continue
        if committed:
            on_ok()
        backoff.resume(consumer)
        if not committed:
            return False
    return True


def recreate_consumer(
    consumer: Any,
    factory: Callable[[], Any],
    stop: Any,
    delays: Iterator[float],
    on_error: Callable[[BaseException], None],
) -> Any | None:
    """Close a stuck consumer without committing and build a fresh one with ``factory``.

    Uncommitted work is replayed by the new member (the services' writes are
    idempotent). While the factory fails (Kafka down), ``on_error`` is told and we
    back off; returns None when ``stop`` is set first.
    """
    from kafka.errors import KafkaError

    try:
        consumer.close(autocommit=False)
    except Exception as exc:  # a broken client may fail to close; it is dropped anyway
        _log.warning("closing the stalled consumer failed", extra={"error": str(exc)})
    while not stop.is_set():
        try:
            return factory()
        except KafkaError as exc:
            on_error(exc)
            _log.warning("recreating the consumer failed", extra={"error": str(exc)})
            stop.wait(next(delays))
    return None


# --- the loop ---------------------------------------------------------------------------


class Plan(Protocol):
    """What the loop reads from a handler's planned batch."""

    @property
    def rejected(self) -> Sequence[tuple[RawRecord, Rejection]]: ...
    @property
    def offsets(self) -> Mapping[tuple[str, int], int]: ...


P = TypeVar("P", bound=Plan)


class Dependencies(Protocol):
    """The loop's side of a handler's writes: retries with back-off, and health."""

    def retry(self, dependency: str, stop: threading.Event, fn: Callable[[], T]) -> T | None: ...
    def failed(self, dependency: str, exc: BaseException) -> None: ...
    def answered(self, dependency: str) -> None: ...


class BatchHandler(Protocol[P]):
    """One consumer's logic: the only part that differs between the services' loops."""

    #: The handler's dependencies besides Kafka (health is SERVING while all answer).
    dependencies: tuple[str, ...]
    #: True: send() starts writes that complete() later waits for, and the loop polls
    #: and plans the next batch in between. False: complete() does the work at once.
    pipelined: bool

    def plan(self, records: list[RawRecord]) -> P:
        """Decode and validate (pure): what to write, what to dead-letter, the offsets."""
        ...

    def send(self, plan: P, deps: Dependencies) -> Any:
        """Start the batch's writes without waiting; a token for complete() (or None)."""
        ...

    def complete(self, plan: P, sent: Any, deps: Dependencies, stop: threading.Event) -> bool:
        """Finish the batch's writes (retrying through ``deps``); False if asked to stop."""
        ...

    def probe(self) -> dict[str, bool]:
        """Whether each dependency answers now (called while idle or degraded)."""
        ...


@dataclass(frozen=True)
class LoopMetrics:
    """The service's own metric objects the loop updates (names differ per service)."""

    dead_lettered: Any  # Counter, label: code
    dependency_errors: Any  # Counter, label: dependency
    degraded: Any  # Gauge
    consumer_restarts: Any  # Counter, label: reason
    batch_seconds: Any  # Histogram
    batch_size: Any | None = None  # Histogram
    lag: Any | None = None  # Gauge, labels: topic, partition


@dataclass(slots=True)
class _InFlight:
    """A batch whose writes were sent and whose offsets are not committed yet."""

    plan: Any
    sent: Any
    started: float


class ConsumeLoop(Generic[P]):
    """Owns the consumer-group mechanics; the Kafka clients are built (and closed) by the
    caller, who also passes ``consumer_factory`` to let the watchdog rebuild a stuck one."""

    def __init__(
        self,
        settings: ConsumerSettings,
        handler: BatchHandler[P],
        consumer: Any,
        producer: Any,
        metrics: LoopMetrics,
        health: HealthState | None = None,
        consumer_factory: Callable[[], Any] | None = None,
        *,
        commit_wait: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.health = health
        # Rebuilds the consumer when the watchdog finds it stuck; None: never rebuilt.
        self.consumer_factory = consumer_factory
        # False: the loop's own path sends each commit without waiting for the broker
        # (the writes it covers already succeeded); True: every commit is waited for.
        self.commit_wait = commit_wait
        self.log = log or _log
        self.watchdog = ProgressWatchdog(settings.stall_timeout_s, time.monotonic())
        self.restarts = 0
        # Offsets whose records are applied but not yet committed.
        self._pending: dict[TopicPartition, int] = {}
        # The loop's commit sent without waiting (see _commit_nowait): its offsets while
        # unanswered or failed (None: none), when it was sent, and its error if it failed.
        self._commit_sent: dict[TopicPartition, int] | None = None
        self._commit_sent_at = 0.0
        self._commit_error: BaseException | None = None
        self._commit_token = 0  # bumped by every commit: a stale answer is ignored
        self._backoff = PausedBackoff()
        self._in_flight: _InFlight | None = None
        self._ok = dict.fromkeys(("kafka", *handler.dependencies), True)
        # The series this loop may write whose labels it knows, at zero from the start: a
        # counter that first appears on its first increment is invisible to absent() alerts.
        for dependency in self._ok:
            metrics.dependency_errors.labels(dependency)
        for reason in (STALL_JOIN, STALL_NO_PROGRESS):
            metrics.consumer_restarts.labels(reason)
        self._last_check = 0.0
        self.polled_at = 0.0  # perf_counter() of the last poll that returned records
        self.batches = 0
        self.dead_lettered = 0

    # --- group membership -------------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe([self.settings.topic], listener=rebalance_listener(self))

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what we applied from partitions we are losing, so the next owner skips it."""
        commit_on_revoke(self.consumer, self._pending, revoked)
        self.log.info(
            "partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)}
        )

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._backoff.on_assigned(self.consumer, assigned)
        if self.metrics.lag is not None:  # a series per partition we own, before its first batch
            for tp in assigned:
                self.metrics.lag.labels(tp.topic, str(tp.partition))
        self.log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )

    # --- health -----------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return all(self._ok.values())

    def _set(self, dependency: str, ok: bool) -> None:
        if self._ok.get(dependency) == ok:
            return
        self._ok[dependency] = ok
        self._update_health(dependency)

    def _update_health(self, dependency: str | None = None) -> None:
        healthy = self.healthy
        self.metrics.degraded.set(0 if healthy else 1)
        if self.health is not None and self.health.serving != healthy:
            self.health.set_serving(healthy)
            self.log.info("health changed", extra={"serving": healthy, "dependency": dependency})

    def failed(self, dependency: str, exc: BaseException) -> None:
        """A dependency failed (counted, health NOT_SERVING); the caller retries."""
        self.metrics.dependency_errors.labels(dependency).inc()
        self._set(dependency, False)
        self.log.warning(f"{dependency} failed; retrying", extra={"error": str(exc)})

    def answered(self, dependency: str) -> None:
        self._set(dependency, True)

    def _coordinator_known(self) -> bool:
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is None or not hasattr(coordinator, "coordinator_unknown"):
            return True
        try:
            return not coordinator.coordinator_unknown()
        except Exception:  # a probe must never break the loop
            return False

    def check_dependencies(self) -> None:
        """Probe the handler's dependencies and the group coordinator (idle or degraded)."""
        try:
            probed = self.handler.probe()
        except Exception as exc:  # a probe must never break the loop
            self.log.warning("dependency probe failed", extra={"error": str(exc)})
            probed = dict.fromkeys(self.handler.dependencies, False)
        probed["kafka"] = self._coordinator_known()
        self._ok.update(probed)
        self._update_health()

    # --- the loop ---------------------------------------------------------------------
    def _delays(self) -> Iterator[float]:
        return backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)

    def wait_for_topic(self, stop: threading.Event) -> bool:
        """Block until the topic's partitions are known; False when asked to stop.

        Subscribing before the metadata exists lets the group assign nothing and
        then wait out a rebalance, so a fresh topic would sit unconsumed.
        """
        delays = self._delays()
        while not stop.is_set():
            if wait_for_partitions(self.consumer, self.settings.topic, timeout_s=0, stop=stop):
                return True
            self.log.info("waiting for topic", extra={"topic": self.settings.topic})
            stop.wait(next(delays))
        return False

    def run(self, stop: threading.Event) -> None:
        if not self.wait_for_topic(stop):
            return
        self.subscribe()
        self.watchdog.reset(time.monotonic())
        self.check_dependencies()
        try:
            while not stop.is_set():
                if self.step(stop):
                    self.watchdog.progressed(time.monotonic())
                now = time.monotonic()
                if now - self._last_check >= self.settings.health_check_interval_s:
                    self._last_check = now
                    self.check_dependencies()
                    self.check_stall(stop)
        finally:
            self.finish(stop)  # the batch in flight: committed if it succeeded, else abandoned

    def check_stall(self, stop: threading.Event) -> str | None:
        """Rebuild the consumer when it is stuck joining, or assigned with lag yet fed nothing.

        Backing off on a failing dependency (partitions paused) is not a stall.
        Returns the reason when it rebuilt the consumer.
        """
        now = time.monotonic()
        if self.consumer_factory is None or self._backoff.active or not self.watchdog.due(now):
            return None
        reason = probe_stall(self.consumer, self.watchdog)
        if reason is not None:
            self.restart_consumer(reason, stop)
        return reason

    def restart_consumer(self, reason: str, stop: threading.Event) -> None:
        """Close the consumer and subscribe a fresh one; uncommitted work is replayed."""
        assert self.consumer_factory is not None
        self.metrics.consumer_restarts.labels(reason).inc()
        self.restarts += 1
        self.log.warning(
            "consumer stalled; recreating it",
            extra={"reason": reason, "stall_s": self.settings.stall_timeout_s},
        )
        self.finish(stop)
        self._pending.clear()
        self._commit_sent = None
        self._commit_error = None
        self._commit_token += 1
        consumer = recreate_consumer(
            self.consumer,
            self.consumer_factory,
            stop,
            self._delays(),
            lambda exc: self._set("kafka", False),
        )
        if consumer is None:
            return
        self.consumer = consumer
        self._backoff = PausedBackoff()  # the new consumer has nothing paused
        if self.wait_for_topic(stop):
            self.subscribe()
        self.watchdog.reset(time.monotonic())

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def step(self, stop: threading.Event) -> int:
        """One poll and the batch it returned; returns the number of records polled.

        With a pipelined handler, batch N's writes were sent without waiting: this polls
        and plans batch N+1 while the dependency runs them, then completes and commits N,
        and only then dead-letters and sends N+1. The poll keeps its normal timeout (it
        returns as soon as records arrive): a zero-timeout poll can leave a group join
        half done, and a commit then fails with RebalanceInProgress.
        """
        try:
            polled = self.consumer.poll(
                timeout_ms=self.settings.poll_timeout_ms,
                max_records=self.settings.max_poll_records,
            )
        except KafkaError as exc:
            self.finish(stop)
            self.failed("kafka", exc)
            stop.wait(self.settings.backoff_initial_s)
            return 0
        records = [r for batch in polled.values() for r in batch]
        if not records:
            self.finish(stop)
            return 0
        # Planning is pure CPU and needs nothing from batch N: it too overlaps N's writes.
        plan, self.polled_at = self._plan(records)
        if self.handler.pipelined:
            self.finish(stop, wait_commit=False)
            self._begin(plan, self.polled_at, stop)
        else:
            self._begin(plan, self.polled_at, stop)
            self.finish(stop, wait_commit=self.commit_wait)
        return len(records)

    def process(self, records: list[RawRecord], stop: threading.Event) -> bool:
        """Handle one batch synchronously; True when its offsets were committed."""
        self.finish(stop)
        self.start(records, stop)
        return self.finish(stop)

    def start(self, records: list[RawRecord], stop: threading.Event) -> None:
        """Plan the batch, dead-letter its bad records, and send its writes (no waiting)."""
        self._begin(*self._plan(records), stop)

    def _plan(self, records: list[RawRecord]) -> tuple[P, float]:
        """Decode and validate a polled batch; with the time it started (its latency's start)."""
        started = time.perf_counter()
        if self.metrics.batch_size is not None:
            self.metrics.batch_size.observe(len(records))
        return self.handler.plan(records), started

    def _begin(self, plan: P, started: float, stop: threading.Event) -> None:
        """Dead-letter a planned batch's bad records and send its writes (no waiting)."""
        if plan.rejected and not self._dead_letter(plan.rejected, stop):
            return  # asked to stop while Kafka was down: abandoned, uncommitted
        self._in_flight = _InFlight(plan, self.handler.send(plan, self), started)

    def finish(self, stop: threading.Event, *, wait_commit: bool = True) -> bool:
        """Complete the batch in flight, then commit it; True when committed (or none).

        ``wait_commit=False`` (the loop's own path) sends the commit without
        waiting for the broker's answer and returns True once it is sent.
        """
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            if wait_commit and (self._pending or self._commit_sent is not None):
                return self._commit(stop)  # e.g. offsets left by the last step, at shutdown
            return True
        plan = flight.plan
        if not self.handler.complete(plan, flight.sent, self, stop):
            self.log.info("stopping: batch abandoned without commit")
            return False
        for (topic, partition), offset in plan.offsets.items():
            self._pending[TopicPartition(topic, partition)] = offset
        committed = self._commit(stop) if wait_commit else self._commit_nowait(stop)
        self._record_lag(plan)
        self.batches += 1
        self.metrics.batch_seconds.observe(time.perf_counter() - flight.started)
        return committed

    # --- retries ----------------------------------------------------------------------
    def retry(self, dependency: str, stop: threading.Event, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` until it succeeds (its result) or we are asked to stop (None).

        Between tries the partitions are paused and ``poll`` keeps the member in its group.
        """
        delays = self._delays()
        while True:
            try:
                result = fn()
            except RETRYABLE as exc:
                if isinstance(exc, PermissionDeniedError):
                    # A refused grant or login (a Redis ACL) fails the same way on every
                    # try: stop the loop with the error's message instead of backing off.
                    self.metrics.dependency_errors.labels(dependency).inc()
                    self._set(dependency, False)
                    raise
                self.failed(dependency, exc)
                if not self._backoff.wait(self.consumer, next(delays), stop):
                    return None
                continue
            self.answered(dependency)
            self._backoff.resume(self.consumer)
            return result

    def _dead_letter(
        self, rejected: Sequence[tuple[RawRecord, Rejection]], stop: threading.Event
    ) -> bool:
        def send() -> int:
            futures = [
                self.producer.send(
                    self.settings.dlq_topic,
                    key=record.key,
                    value=record.value,
                    headers=dead_letter_headers(record, rejection),
                )
                for record, rejection in rejected
            ]
            self.producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=10)
            return len(futures)

        if self.retry("kafka", stop, send) is None:
            return False
        for _record, rejection in rejected:
            self.metrics.dead_lettered.labels(rejection.code).inc()
            self.log.info("dead-lettered", extra={"reason": rejection.reason})
        self.dead_lettered += len(rejected)
        return True

    # --- commits ----------------------------------------------------------------------
    def _commit_nowait(self, stop: threading.Event) -> bool:
        """Send the commit of the applied offsets and return without waiting for the broker.

        The offsets' writes have succeeded, so this is as safe as a blocking
        commit; it only spares the loop a broker round trip per batch. At most
        one such commit is awaiting its answer: until it comes, newer offsets
        wait in ``_pending`` for the next one. If it failed, or is still
        unanswered after a health-check interval, its offsets go back to
        ``_pending`` and are committed here synchronously (with the retries,
        back-off and rebalance handling of :meth:`_commit`).
        """
        if self._commit_sent is not None:
            waited = time.monotonic() - self._commit_sent_at
            if self._commit_error is None and waited <= self.settings.health_check_interval_s:
                return True
            return self._commit(stop)
        assignment = self.consumer.assignment()
        offsets = {tp: o for tp, o in self._pending.items() if tp in assignment}
        self._pending.clear()
        if not offsets:
            return True
        self._commit_sent = offsets
        self._commit_sent_at = time.monotonic()
        self._commit_token += 1
        try:
            self.consumer.commit_async(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                callback=functools.partial(self._on_commit, self._commit_token),
            )
        except KafkaError as exc:
            self._commit_error = exc
            return self._commit(stop)
        return True

    def _on_commit(self, token: int, offsets: Any, response: Any) -> None:
        """kafka-python's answer to a commit sent by _commit_nowait (called from poll).

        A commit made since (synchronous, or after a restart) supersedes it and
        already carried its offsets: its answer is then ignored, so a late
        failure never re-commits older offsets.
        """
        if token != self._commit_token:
            return
        if isinstance(response, BaseException):
            self._commit_error = response
            return
        self._commit_sent = None
        self.answered("kafka")

    def _commit(self, stop: threading.Event) -> bool:
        sent, self._commit_sent = self._commit_sent, None
        error, self._commit_error = self._commit_error, None
        self._commit_token += 1  # supersedes an unanswered commit: its offsets go in this one
        if error is not None:
            self.metrics.dependency_errors.labels("kafka").inc()
            self.log.warning("commit failed; retrying", extra={"error": str(error)})
        for tp, offset in (sent or {}).items():
            if self._pending.get(tp, -1) < offset:
                self._pending[tp] = offset
        # False when rebalanced: the new owner replays; the writes are idempotent.
        return commit_until_done(
            self.consumer, self._pending, self._backoff, stop, self._delays(),
            lambda exc: self.failed("kafka", exc), lambda: self.answered("kafka"),
        )  # fmt: skip

    def _record_lag(self, plan: P) -> None:
        if self.metrics.lag is None:
            return
        for (topic, partition), offset in plan.offsets.items():
            try:
                high = self.consumer.highwater(TopicPartition(topic, partition))
            except (KafkaError, AssertionError):
                continue
            if high is not None:
                self.metrics.lag.labels(topic, str(partition)).set(max(0, high - offset))
