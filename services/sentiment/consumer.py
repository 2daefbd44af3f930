"""The Kafka path: feedback in, scored records out, recommender features in Redis.

Per polled micro-batch: decode and validate every record (bad ones go to the
dead-letter topic with the original bytes and a reason header), classify the
rest in one model call, write the Redis features (decayed per-user sentiment
average; the item into the user's suppression set when negative feedback
names one, out of it when positive feedback does), produce the scored records,
and only then commit the offsets.

Delivery is at-least-once, as in the events service: a crash before the
commit replays the batch. Suppression is idempotent (same member, later
expiry); the sentiment average folds a replayed record in a second time,
which the decay makes a bounded, fading error (see docs/sentiment.md).

The handler runs on the shared consume loop (:mod:`recsys.consume`), which owns
the group, the dead letters, the commits and the watchdog. Each stage retries on
its own while its dependency fails (model backend, Redis, Kafka), with the
partitions paused and ``poll`` still called so the group keeps us; health reports
NOT_SERVING meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.consume import RETRYABLE, ConsumeLoop, Dependencies, LoopMetrics
from recsys.feedback.v1 import feedback_pb2
from recsys.health import HealthState
from recsys.kafka_codec import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, RawRecord, encode
from recsys.store import FeatureStore
from services.sentiment import metrics
from services.sentiment.config import SentimentSettings
from services.sentiment.core import (
    FeedbackItem,
    FeedbackPlan,
    Prediction,
    Predictor,
    TextRequest,
    classify,
    feedback_time,
    plan_feedback,
    should_suppress,
    should_unsuppress,
)

log = logging.getLogger("services.sentiment.consumer")

LOOP_METRICS = LoopMetrics(
    dead_lettered=metrics.DEAD_LETTERED,
    dependency_errors=metrics.DEPENDENCY_ERRORS,
    degraded=metrics.DEGRADED,
    consumer_restarts=metrics.CONSUMER_RESTARTS,
    batch_seconds=metrics.BATCH_SECONDS,
)


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


class SentimentHandler:
    """Classifies a feedback batch in one model call, writes the Redis features, then
    produces the scored records (all before the loop commits)."""

    dependencies: tuple[str, ...] = ("redis", "model")
    pipelined = False

    def __init__(
        self,
        settings: SentimentSettings,
        producer: Any,
        store: FeatureStore,
        predictor: Predictor,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.store = store
        self.predictor = predictor
        self.clock = clock
        self._content_type = (
            CONTENT_TYPE_JSON if settings.output_encoding == "json" else CONTENT_TYPE_PROTOBUF
        )
        self.scored = 0
        self.suppressed = 0
        self.unsuppressed = 0  # suppressions lifted by positive feedback

    def plan(self, records: list[RawRecord]) -> FeedbackPlan:
        s = self.settings
        return plan_feedback(
            records, max_text_chars=s.max_text_chars, max_id_length=s.max_id_length
        )

    def send(self, plan: FeedbackPlan, deps: Dependencies) -> None:
        return None  # not pipelined: complete() does the work at once

    def complete(
        self, plan: FeedbackPlan, sent: None, deps: Dependencies, stop: threading.Event
    ) -> bool:
        if not plan.items:
            return True
        items = plan.items
        predictions = deps.retry("model", stop, lambda: self._classify(items))
        if predictions is None:
            return False
        now = self.clock()
        if deps.retry("redis", stop, lambda: self._write_features(items, predictions, now)) is None:
            return False
        if deps.retry("kafka", stop, lambda: self._produce(items, predictions, now)) is None:
            return False
        self.scored += len(items)
        metrics.FEEDBACK_SCORED.inc(len(items))
        return True

    def probe(self) -> dict[str, bool]:
        try:
            redis_ok = bool(self.store.ping())
        except RETRYABLE:
            redis_ok = False
        return {"redis": redis_ok}

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
            metrics.CLASSIFIED.labels(p.label_name, metrics.language_label(p.language)).inc()
        return predictions

    def _write_features(
        self, items: list[FeedbackItem], predictions: list[Prediction], now: float
    ) -> int:
        s = self.settings
        suppressed = lifted = 0
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
            elif should_unsuppress(fb, prediction, s.suppress_min_probability):
                # in record order, so a complaint and a later praise of one item end lifted
                # (and a replay of the batch ends the same way)
                lifted += self.store.unsuppress(fb.user_id, fb.item_id, now=now)
        self.suppressed += suppressed
        self.unsuppressed += lifted
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


class SentimentConsumer(ConsumeLoop[FeedbackPlan]):
    """The sentiment service's consume loop: :class:`SentimentHandler` on the shared loop."""

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
        self.feedback = SentimentHandler(settings, producer, store, predictor, clock)
        super().__init__(
            settings.consumer,
            self.feedback,
            consumer,
            producer,
            LOOP_METRICS,
            health,
            consumer_factory,
            commit_wait=True,
            log=log,
        )
        self.store = store
        self.predictor = predictor

    @property
    def scored(self) -> int:
        return self.feedback.scored

    @property
    def suppressed(self) -> int:
        return self.feedback.suppressed

    @property
    def unsuppressed(self) -> int:
        return self.feedback.unsuppressed
