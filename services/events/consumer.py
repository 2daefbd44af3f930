"""The events service's handler on the shared consume loop (:mod:`recsys.consume`).

Delivery is at-least-once from Kafka and effectively-once into the store:
the loop commits offsets only after the batch's writes succeeded, and the store
ignores events it has already applied, so a crash anywhere replays at most the
uncommitted batches without double counting.

The handler is pipelined: batch N's Redis scripts are sent without waiting, and
the loop polls and plans batch N+1 (decode, validate) while Redis runs them (Redis
and this process on different cores), then reads N's replies and commits N. While
Redis or Kafka fails, the loop keeps the batch, pauses its partitions and keeps
calling ``poll`` (so the group does not evict it), backing off between retries;
health reports NOT_SERVING until the dependency answers again.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys.consume import RETRYABLE, ConsumeLoop, Dependencies, LoopMetrics
from recsys.health import HealthState
from recsys.kafka_codec import RawRecord
from recsys.store import ApplyResult, FeatureEvent, FeatureStore, PendingApply
from services.events import metrics
from services.events.config import EventsSettings
from services.events.core import BatchPlan, plan_batch

log = logging.getLogger("services.events.consumer")
_event_type = operator.attrgetter("event_type")

LOOP_METRICS = LoopMetrics(
    dead_lettered=metrics.DEAD_LETTERED,
    dependency_errors=metrics.DEPENDENCY_ERRORS,
    degraded=metrics.DEGRADED,
    consumer_restarts=metrics.CONSUMER_RESTARTS,
    batch_seconds=metrics.BATCH_SECONDS,
    batch_size=metrics.BATCH_SIZE,
    lag=metrics.LAG,
)


@dataclass(slots=True)
class _Sent:
    """Writes sent for a batch: the store's handle (None: the send failed) and the
    store's round-trip count before it, for the round-trips metric."""

    pending: PendingApply | None
    round_trips: int


class EventsHandler:
    """Plans click batches (pure core) and applies them to the feature store."""

    dependencies: tuple[str, ...] = ("redis",)
    pipelined = True

    def __init__(
        self, settings: EventsSettings, store: FeatureStore, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.applied = 0
        self.duplicates = 0

    def plan(self, records: list[RawRecord]) -> BatchPlan:
        return plan_batch(records, self.clock(), self.settings.validation)

    def _round_trips(self) -> int:
        return int(getattr(self.store, "round_trips", 0))

    def send(self, plan: BatchPlan, deps: Dependencies) -> _Sent | None:
        if not plan.events:
            return None
        sent = _Sent(None, self._round_trips())
        try:
            sent.pending = self.store.begin_apply(plan.events, now=self.clock())
        except RETRYABLE as exc:
            deps.failed("redis", exc)  # complete() retries synchronously, with back-off
        return sent

    def complete(
        self, plan: BatchPlan, sent: _Sent | None, deps: Dependencies, stop: threading.Event
    ) -> bool:
        if not plan.events:
            return True
        result: ApplyResult | None = None
        if sent is not None and sent.pending is not None:
            try:
                result = sent.pending.result()
            except RETRYABLE as exc:
                deps.failed("redis", exc)
            else:
                metrics.REDIS_ROUND_TRIPS.inc(self._round_trips() - sent.round_trips)
                deps.answered("redis")
        if result is None:
            result = deps.retry("redis", stop, lambda: self._apply(plan.events))
            if result is None:
                return False
        self._count(plan.events, result)
        return True

    def _apply(self, events: list[FeatureEvent]) -> ApplyResult:
        """Apply synchronously (idempotent: safe to re-send after a failed send)."""
        before = self._round_trips()
        result = self.store.apply_events(events, now=self.clock())
        metrics.REDIS_ROUND_TRIPS.inc(self._round_trips() - before)
        return result

    def _count(self, events: list[FeatureEvent], result: ApplyResult) -> None:
        dups = len(events) - result.user_applied
        self.applied += result.user_applied
        self.duplicates += dups
        if dups:
            metrics.DUPLICATES.inc(dups)
        for kind, n in Counter(map(_event_type, events)).items():  # counted in C
            metrics.PROCESSED.labels(kind).inc(n)

    def probe(self) -> dict[str, bool]:
        try:
            return {"redis": bool(self.store.ping())}
        except RETRYABLE:
            return {"redis": False}


class EventsConsumer(ConsumeLoop[BatchPlan]):
    """The events service's consume loop: :class:`EventsHandler` on the shared loop."""

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
        self.events = EventsHandler(settings, store, clock)
        super().__init__(
            settings.consumer,
            self.events,
            consumer,
            producer,
            LOOP_METRICS,
            health,
            consumer_factory,
            commit_wait=False,
            log=log,
        )
        self.store = store
        self.clock = clock

    @property
    def applied(self) -> int:
        return self.events.applied

    @property
    def duplicates(self) -> int:
        return self.events.duplicates
