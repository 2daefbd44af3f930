"""The Kafka loop: poll, dead-letter, apply to the store, then commit.

Delivery is at-least-once from Kafka and effectively-once into the store:
offsets are committed only after the batch's writes succeeded, and the store
ignores events it has already applied, so a crash anywhere replays at most the
uncommitted batches without double counting.

While Redis or Kafka fails, the loop keeps its batch, pauses its partitions and
keeps calling ``poll`` (so the group does not evict it), backing off between
retries; health reports NOT_SERVING until the dependency answers again.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from redis.exceptions import RedisError

from recsys.health import HealthState
from recsys.kafka_io import (
    PausedBackoff,
    ProgressWatchdog,
    backoff_delays,
    commit_on_revoke,
    commit_until_done,
    dead_letter_headers,
    probe_stall,
    rebalance_listener,
    recreate_consumer,
    wait_for_partitions,
)
from recsys.store import ApplyResult, FeatureEvent, FeatureStore, PendingApply
from services.events import metrics
from services.events.config import EventsSettings
from services.events.core import BatchPlan, RawRecord, Rejection, plan_batch

log = logging.getLogger("services.events.consumer")
_event_type = operator.attrgetter("event_type")


@dataclass(slots=True)
class _InFlight:
    """A batch whose Redis writes were sent and whose offsets are not committed yet."""

    plan: BatchPlan
    pending: PendingApply | None  # None: nothing sent (no events, or the send failed)
    started: float
    round_trips: int


class EventsConsumer:
    """Owns the loop; the Kafka clients and the store are built (and closed) by the caller."""

    def __init__(
        self,
        settings: EventsSettings,
        consumer: Any,
        producer: Any,
        store: FeatureStore,
        health: HealthState | None = None,
        clock: Callable[[], float] = time.time,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        # Rebuilds the consumer when the watchdog finds it stuck; None: never rebuilt.
        self.consumer_factory = consumer_factory
        self.watchdog = ProgressWatchdog(settings.stall_timeout_s, time.monotonic())
        self.restarts = 0
        self.producer = producer
        self.store = store
        self.health = health
        self.clock = clock
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
        self._redis_ok = True
        self._kafka_ok = True
        self._last_check = 0.0
        self.polled_at = 0.0  # perf_counter() of the last poll that returned records
        self.batches = 0
        self.applied = 0
        self.duplicates = 0
        self.dead_lettered = 0

    # --- group membership -------------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe([self.settings.topic], listener=rebalance_listener(self))

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what we applied from partitions we are losing, so the next owner skips it."""
        commit_on_revoke(self.consumer, self._pending, revoked)
        log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)})

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._backoff.on_assigned(self.consumer, assigned)
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )

    # --- health -----------------------------------------------------------------------
    def _update_health(self) -> None:
        healthy = self._redis_ok and self._kafka_ok
        metrics.DEGRADED.set(0 if healthy else 1)
        if self.health is not None and self.health.serving != healthy:
            self.health.set_serving(healthy)
            log.info("health changed", extra={"serving": healthy})

    def _set(self, *, redis_ok: bool | None = None, kafka_ok: bool | None = None) -> None:
        if redis_ok is not None:
            self._redis_ok = redis_ok
        if kafka_ok is not None:
            self._kafka_ok = kafka_ok
        self._update_health()

    def _coordinator_known(self) -> bool:
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is None or not hasattr(coordinator, "coordinator_unknown"):
            return True
        try:
            return not coordinator.coordinator_unknown()
        except Exception:  # a probe must never break the loop
            return False

    def check_dependencies(self) -> None:
        """Probe Redis and the group coordinator (when idle, or while degraded)."""
        try:
            redis_ok = bool(self.store.ping())
        except (RedisError, OSError):
            redis_ok = False
        self._set(redis_ok=redis_ok, kafka_ok=self._coordinator_known())

    # --- the loop ---------------------------------------------------------------------
    def wait_for_topic(self, stop: threading.Event) -> bool:
        """Block until the topic's partitions are known; False when asked to stop.

        Subscribing before the metadata exists lets the group assign nothing and
        then wait out a rebalance, so a fresh topic would sit unconsumed.
        """
        delays = iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s))
        while not stop.is_set():
            if wait_for_partitions(self.consumer, self.settings.topic, timeout_s=0, stop=stop):
                return True
            log.info("waiting for topic", extra={"topic": self.settings.topic})
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
            self.finish(stop)  # the batch in Redis: committed if it succeeded, else abandoned

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
        metrics.CONSUMER_RESTARTS.labels(reason).inc()
        self.restarts += 1
        log.warning(
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
            iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)),
            lambda exc: self._set(kafka_ok=False),
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
        """One poll, overlapped with the previous batch's Redis writes; returns records polled.

        Batch N's scripts were sent without waiting; this polls and plans batch
        N+1 (decode, validate) while Redis runs them (Redis and this process on
        different cores), then reads N's replies and commits N, and only then
        dead-letters and sends N+1. So offsets are still committed only after
        their writes succeeded, and batches are applied in poll order, one at a
        time. The poll keeps its normal timeout (it returns
        as soon as records arrive): a zero-timeout poll can leave a group join
        half done, and a commit then fails with RebalanceInProgress.
        """
        try:
            polled = self.consumer.poll(
                timeout_ms=self.settings.poll_timeout_ms,  # returns as soon as records arrive
                max_records=self.settings.max_poll_records,
            )
        except KafkaError as exc:
            self.finish(stop)
            metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
            self._set(kafka_ok=False)
            log.warning("poll failed", extra={"error": str(exc)})
            stop.wait(self.settings.backoff_initial_s)
            return 0
        records = [r for batch in polled.values() for r in batch]
        if not records:
            self.finish(stop)
            return 0
        # Planning is pure CPU and needs nothing from batch N: it too overlaps N's writes.
        plan, self.polled_at = self._plan(records)
        self.finish(stop, wait_commit=False)
        self._begin(plan, self.polled_at, stop)
        return len(records)

    def process(self, records: list[RawRecord], stop: threading.Event) -> bool:
        """Handle one batch synchronously; True when its offsets were committed."""
        self.finish(stop)
        self.start(records, stop)
        return self.finish(stop)

    def start(self, records: list[RawRecord], stop: threading.Event) -> None:
        """Plan the batch, dead-letter its bad records, and send its writes (no waiting)."""
        self._begin(*self._plan(records), stop)

    def _plan(self, records: list[RawRecord]) -> tuple[BatchPlan, float]:
        """Decode and validate a polled batch; with the time it started (its latency's start)."""
        started = time.perf_counter()
        metrics.BATCH_SIZE.observe(len(records))
        return plan_batch(records, self.clock(), self.settings.validation), started

    def _begin(self, plan: BatchPlan, started: float, stop: threading.Event) -> None:
        """Dead-letter a planned batch's bad records and send its writes (no waiting)."""
        if plan.rejected and not self._dead_letter(plan.rejected, stop):
            return  # asked to stop while Kafka was down: abandoned, uncommitted
        flight = _InFlight(plan, None, started, getattr(self.store, "round_trips", 0))
        if plan.events:
            try:
                flight.pending = self.store.begin_apply(plan.events, now=self.clock())
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)  # finish() retries synchronously, with back-off
        self._in_flight = flight

    def finish(self, stop: threading.Event, *, wait_commit: bool = True) -> bool:
        """Wait for the batch in flight, then commit it; True when committed (or none).

        ``wait_commit=False`` (the loop's own path) sends the commit without
        waiting for the broker's answer and returns True once it is sent.
        """
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            if wait_commit and (self._pending or self._commit_sent is not None):
                return self._commit(stop)  # e.g. offsets left by the last step, at shutdown
            return True
        plan = flight.plan
        if plan.events:
            result: ApplyResult | None = None
            if flight.pending is not None:
                try:
                    result = flight.pending.result()
                except (RedisError, OSError) as exc:
                    self._redis_failed(exc)
                else:
                    metrics.REDIS_ROUND_TRIPS.inc(
                        getattr(self.store, "round_trips", 0) - flight.round_trips
                    )
                    if not self._redis_ok:
                        self._set(redis_ok=True)
            if result is None:
                result = self._apply(plan.events, stop)  # idempotent: safe to re-send
                if result is None:
                    return False
            self._count(plan.events, result)
        for (topic, partition), offset in plan.offsets.items():
            self._pending[TopicPartition(topic, partition)] = offset
        committed = self._commit(stop) if wait_commit else self._commit_nowait(stop)
        self._record_lag(plan)
        self.batches += 1
        metrics.BATCH_SECONDS.observe(time.perf_counter() - flight.started)
        return committed

    def _redis_failed(self, exc: BaseException) -> None:
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
        self._set(redis_ok=False)
        log.warning("redis write failed; retrying", extra={"error": str(exc)})

    def _count(self, events: list[FeatureEvent], result: ApplyResult) -> None:
        dups = len(events) - result.user_applied
        self.applied += result.user_applied
        self.duplicates += dups
        if dups:
            metrics.DUPLICATES.inc(dups)
        for kind, n in Counter(map(_event_type, events)).items():  # counted in C
            metrics.PROCESSED.labels(kind).inc(n)

    # --- retries ----------------------------------------------------------------------
    def _wait(self, delay: float, stop: threading.Event) -> bool:
        return self._backoff.wait(self.consumer, delay, stop)

    def _resume(self) -> None:
        self._backoff.resume(self.consumer)

    def _apply(self, events: list[FeatureEvent], stop: threading.Event) -> ApplyResult | None:
        delays = iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s))
        while True:
            before = getattr(self.store, "round_trips", 0)
            try:
                result = self.store.apply_events(events, now=self.clock())
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                if not self._wait(next(delays), stop):
                    log.info("stopping: batch abandoned without commit")
                    return None
                continue
            metrics.REDIS_ROUND_TRIPS.inc(getattr(self.store, "round_trips", 0) - before)
            if not self._redis_ok:
                self._set(redis_ok=True)
            self._resume()
            return result

    def _dead_letter(
        self, rejected: list[tuple[RawRecord, Rejection]], stop: threading.Event
    ) -> bool:
        delays = iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s))
        while True:
            try:
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
            except KafkaError as exc:
                metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
                self._set(kafka_ok=False)
                log.warning("dead-letter produce failed; retrying", extra={"error": str(exc)})
                if not self._wait(next(delays), stop):
                    return False
                continue
            for _record, rejection in rejected:
                metrics.DEAD_LETTERED.labels(rejection.code).inc()
                log.info("dead-lettered", extra={"reason": rejection.reason})
            self.dead_lettered += len(rejected)
            self._resume()
            return True

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
        if not self._kafka_ok:
            self._set(kafka_ok=True)

    def _commit(self, stop: threading.Event) -> bool:
        sent, self._commit_sent = self._commit_sent, None
        error, self._commit_error = self._commit_error, None
        self._commit_token += 1  # supersedes an unanswered commit: its offsets go in this one
        if error is not None:
            metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
            log.warning("commit failed; retrying", extra={"error": str(error)})
        for tp, offset in (sent or {}).items():
            if self._pending.get(tp, -1) < offset:
                self._pending[tp] = offset
        # False when rebalanced: the new owner replays; the store dedups.
        return commit_until_done(
            self.consumer, self._pending, self._backoff, stop,
            iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)),
            self._commit_failed, self._kafka_answered,
        )  # fmt: skip

    def _commit_failed(self, exc: BaseException) -> None:
        metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
        self._set(kafka_ok=False)
        log.warning("commit failed; retrying", extra={"error": str(exc)})

    def _kafka_answered(self) -> None:
        if not self._kafka_ok:
            self._set(kafka_ok=True)

    def _record_lag(self, plan: BatchPlan) -> None:
        for (topic, partition), offset in plan.offsets.items():
            try:
                high = self.consumer.highwater(TopicPartition(topic, partition))
            except (KafkaError, AssertionError):
                continue
            if high is not None:
                metrics.LAG.labels(topic, str(partition)).set(max(0, high - offset))
