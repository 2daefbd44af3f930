"""The Kafka path: feedback in, scored records out, recommender features in Redis.

Per polled micro-batch: decode and validate every record (bad ones go to the
dead-letter topic with the original bytes and a reason header), classify the
rest in one model call, write the Redis features (decayed per-user sentiment
average; the item into the user's suppression set when negative feedback
names one), produce the scored records, and only then commit the offsets.

Delivery is at-least-once, as in the events service: a crash before the
commit replays the batch. Suppression is idempotent (same member, later
expiry); the sentiment average folds a replayed record in a second time,
which the decay makes a bounded, fading error (see docs/sentiment.md).

Each stage retries on its own while its dependency fails (model backend,
Redis, Kafka), with the partitions paused and ``poll`` still called so the
group keeps us; health reports NOT_SERVING meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from kafka import TopicPartition
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from recsys.errors import RecsysError
from recsys.feedback.v1 import feedback_pb2
from recsys.health import HealthState
from recsys.kafka_io import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    PausedBackoff,
    ProgressWatchdog,
    backoff_delays,
    commit_on_revoke,
    commit_until_done,
    dead_letter_headers,
    encode,
    probe_stall,
    rebalance_listener,
    recreate_consumer,
    wait_for_partitions,
)
from recsys.store import FeatureStore
from services.sentiment import metrics
from services.sentiment.config import SentimentSettings
from services.sentiment.core import (
    FeedbackItem,
    Prediction,
    Predictor,
    RawRecord,
    Rejection,
    TextRequest,
    classify,
    feedback_time,
    plan_feedback,
    should_suppress,
)

log = logging.getLogger("services.sentiment.consumer")
T = TypeVar("T")
STALL_CHECK_INTERVAL_S = 5.0


def scored_record(
    item: FeedbackItem, prediction: Prediction, now: float
) -> feedback_pb2.ScoredFeedback:
    scored_time = Timestamp()
    scored_time.FromNanoseconds(int(now * 1e9))
    return feedback_pb2.ScoredFeedback(
        feedback=item.feedback,
        label=prediction.proto_label,  # type: ignore[arg-type]
        probabilities=prediction.probability_map(),
        language=prediction.language,
        model_version=prediction.model_version,
        scored_time=scored_time,
    )


class SentimentConsumer:
    """Owns the loop; the caller builds (and closes) the clients, store and predictor."""

    def __init__(
        self,
        settings: SentimentSettings,
        consumer: Any,
        producer: Any,
        store: FeatureStore,
        predictor: Predictor,
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
        self.predictor = predictor
        self.health = health
        self.clock = clock
        self._pending: dict[TopicPartition, int] = {}
        self._backoff = PausedBackoff()
        self._ok = {"redis": True, "kafka": True, "model": True}
        self._content_type = (
            CONTENT_TYPE_JSON if settings.output_encoding == "json" else CONTENT_TYPE_PROTOBUF
        )
        self.batches = 0
        self.scored = 0
        self.suppressed = 0
        self.dead_lettered = 0

    # --- group membership -------------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe([self.settings.topic], listener=rebalance_listener(self))

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what we handled from partitions we are losing, without waiting."""
        commit_on_revoke(self.consumer, self._pending, revoked)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._backoff.on_assigned(self.consumer, assigned)

    # --- health -----------------------------------------------------------------------
    def _set(self, dependency: str, ok: bool) -> None:
        if self._ok[dependency] == ok:
            return
        self._ok[dependency] = ok
        healthy = all(self._ok.values())
        metrics.DEGRADED.set(0 if healthy else 1)
        if self.health is not None and self.health.serving != healthy:
            self.health.set_serving(healthy)
            log.info("health changed", extra={"serving": healthy, "dependency": dependency})

    # --- the loop ---------------------------------------------------------------------
    def wait_for_topic(self, stop: threading.Event) -> bool:
        """Block until this consumer's metadata has the topic's partition leaders.

        Subscribing earlier lets the group leader log "No partition metadata
        for topic" and assign nothing until its next metadata refresh.
        """
        while not stop.is_set():
            if wait_for_partitions(self.consumer, self.settings.topic, timeout_s=10.0, stop=stop):
                return True
            log.info("waiting for topic", extra={"topic": self.settings.topic})
        return False

    def run(self, stop: threading.Event) -> None:
        if not self.wait_for_topic(stop):
            return
        self.subscribe()
        self.watchdog.reset(time.monotonic())
        last_check = time.monotonic()
        if self.health is not None:
            self.health.set_serving(all(self._ok.values()))
        while not stop.is_set():
            now = time.monotonic()
            if now - last_check >= STALL_CHECK_INTERVAL_S:
                last_check = now
                self.check_stall(stop)
            try:
                polled = self.consumer.poll(
                    timeout_ms=self.settings.poll_timeout_ms,
                    max_records=self.settings.max_poll_records,
                )
            except KafkaError as exc:
                metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
                self._set("kafka", False)
                log.warning("poll failed", extra={"error": str(exc)})
                stop.wait(self.settings.backoff_initial_s)
                continue
            records = [r for batch in polled.values() for r in batch]
            if records:
                self.process(records, stop)
                # After the batch, not at the poll: a slow model call is not a stall.
                self.watchdog.progressed(time.monotonic())

    def check_stall(self, stop: threading.Event) -> str | None:
        """Rebuild the consumer when stuck joining, or assigned with lag yet fed nothing."""
        now = time.monotonic()
        if self.consumer_factory is None or self._backoff.active or not self.watchdog.due(now):
            return None
        reason = probe_stall(self.consumer, self.watchdog)
        if reason is None:
            return None
        metrics.CONSUMER_RESTARTS.labels(reason).inc()
        self.restarts += 1
        log.warning(
            "consumer stalled; recreating it",
            extra={"reason": reason, "stall_s": self.settings.stall_timeout_s},
        )
        self._pending.clear()  # uncommitted: replayed by the new member
        consumer = recreate_consumer(
            self.consumer,
            self.consumer_factory,
            stop,
            iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)),
            lambda exc: self._set("kafka", False),
        )
        if consumer is not None:
            self.consumer = consumer
            self._backoff = PausedBackoff()  # the new consumer has nothing paused
            if self.wait_for_topic(stop):
                self.subscribe()
        self.watchdog.reset(time.monotonic())
        return reason

    def process(self, records: list[RawRecord], stop: threading.Event) -> bool:
        """Handle one polled batch; True when its offsets were committed."""
        started = time.perf_counter()
        s = self.settings
        plan = plan_feedback(
            records, max_text_chars=s.max_text_chars, max_id_length=s.max_id_length
        )
        if plan.rejected and not self._dead_letter(plan.rejected, stop):
            return False
        if plan.items:
            predictions = self._retry("model", stop, lambda: self._classify(plan.items))
            if predictions is None:
                return False
            now = self.clock()
            if (
                self._retry(
                    "redis", stop, lambda: self._write_features(plan.items, predictions, now)
                )
                is None
            ):
                return False
            if (
                self._retry("kafka", stop, lambda: self._produce(plan.items, predictions, now))
                is None
            ):
                return False
            self.scored += len(plan.items)
            metrics.FEEDBACK_SCORED.inc(len(plan.items))
        for (topic, partition), offset in plan.offsets.items():
            self._pending[TopicPartition(topic, partition)] = offset
        committed = self._commit(stop)
        self.batches += 1
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return committed

    # --- stages -----------------------------------------------------------------------
    def _classify(self, items: list[FeedbackItem]) -> list[Prediction]:
        requests = [TextRequest(i.feedback.text, i.language) for i in items]
        predictions = classify(
            self.predictor,
            requests,
            max_chars=self.settings.max_text_chars,
            max_batch=len(requests),
        )
        for p in predictions:
            metrics.CLASSIFIED.labels(p.label_name, p.language).inc()
        return predictions

    def _write_features(
        self, items: list[FeedbackItem], predictions: list[Prediction], now: float
    ) -> int:
        s = self.settings
        suppressed = 0
        for item, prediction in zip(items, predictions, strict=True):
            fb = item.feedback
            self.store.update_sentiment(
                fb.user_id,
                prediction.score,
                feedback_time(fb, now),
                s.half_life_s,
                feedback_id=fb.feedback_id,
                now=now,
            )
            if should_suppress(fb, prediction, s.suppress_min_probability):
                self.store.suppress(fb.user_id, fb.item_id, s.suppress_ttl_s, now=now)
                suppressed += 1
        self.suppressed += suppressed
        metrics.SUPPRESSED.inc(suppressed)
        return suppressed

    def _produce(self, items: list[FeedbackItem], predictions: list[Prediction], now: float) -> int:
        futures = []
        for item, prediction in zip(items, predictions, strict=True):
            value, headers = encode(scored_record(item, prediction, now), self._content_type)
            futures.append(
                self.producer.send(
                    self.settings.output_topic,
                    key=item.feedback.user_id.encode("utf-8"),
                    value=value,
                    headers=list(headers),
                )
            )
        self.producer.flush(timeout=10)
        for future in futures:
            future.get(timeout=10)
        return len(futures)

    def _dead_letter(
        self, rejected: list[tuple[RawRecord, Rejection]], stop: threading.Event
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

        if self._retry("kafka", stop, send) is None:
            return False
        for _record, rejection in rejected:
            metrics.DEAD_LETTERED.labels(rejection.code).inc()
            log.info("dead-lettered", extra={"reason": rejection.reason})
        self.dead_lettered += len(rejected)
        return True

    # --- retries ----------------------------------------------------------------------
    def _retry(self, dependency: str, stop: threading.Event, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` until it succeeds (returns its result) or we are asked to stop (None)."""
        delays: Iterator[float] = iter(
            backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        )
        while True:
            try:
                result = fn()
            except (RedisError, OSError, KafkaError, RecsysError) as exc:
                metrics.DEPENDENCY_ERRORS.labels(dependency).inc()
                self._set(dependency, False)
                log.warning(f"{dependency} failed; retrying", extra={"error": str(exc)})
                if not self._wait(next(delays), stop):
                    log.info("stopping: batch abandoned without commit")
                    return None
                continue
            self._set(dependency, True)
            self._resume()
            return result

    def _wait(self, delay: float, stop: threading.Event) -> bool:
        return self._backoff.wait(self.consumer, delay, stop)

    def _resume(self) -> None:
        self._backoff.resume(self.consumer)

    def _commit(self, stop: threading.Event) -> bool:
        """False when rebalanced: the new owner replays the batch."""
        return commit_until_done(
            self.consumer, self._pending, self._backoff, stop,
            iter(backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)),
            self._commit_failed, lambda: self._set("kafka", True),
        )  # fmt: skip

    def _commit_failed(self, exc: BaseException) -> None:
        metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
        self._set("kafka", False)
        log.warning("commit failed; retrying", extra={"error": str(exc)})
