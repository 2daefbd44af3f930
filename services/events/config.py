"""Events service settings, read once from the environment and validated at start.

Every variable has a documented default (docs/events.md); a bad value fails the
start with a ConfigError naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from recsys.errors import ConfigError
from recsys.kafka_codec import TOPIC_CLICKS, TOPIC_CLICKS_DLQ
from recsys.settings import (
    DEFAULT_REDIS_URL,
    ConsumerSettings,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_str,
    load_consumer_settings,
    validate_redis_url,
)
from recsys.store.model import StoreConfig

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
DEFAULT_EVENT_WEIGHTS = "view=1,click=2,add_to_cart=4,purchase=8"


def parse_weights(raw: str, name: str = "EVENT_WEIGHTS") -> dict[str, float]:
    """``type=weight`` pairs for the non-rating types; every such type must be given."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        kind, sep, value = part.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in EVENT_TYPES or kind == "rating":
            raise ConfigError(
                f"{name}: {part!r} is not type=weight with type in "
                f"{', '.join(t for t in EVENT_TYPES if t != 'rating')}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"{name}: weight {value!r} of {kind} is not a number") from None
        if not math.isfinite(weight):
            raise ConfigError(f"{name}: weight of {kind} must be finite")
        weights[kind] = weight
    missing = [t for t in EVENT_TYPES if t != "rating" and t not in weights]
    if missing:
        raise ConfigError(f"{name} lacks a weight for {', '.join(missing)} (default: "
                          f"{DEFAULT_EVENT_WEIGHTS})")  # fmt: skip
    return weights


@dataclass(frozen=True)
class ValidationConfig:
    """What the pure core needs to accept or reject an event and weigh it."""

    weights: Mapping[str, float] = field(
        default_factory=lambda: parse_weights(DEFAULT_EVENT_WEIGHTS)
    )
    rating_scale: float = 1.0
    rating_offset: float = 0.0
    rating_min: float = 0.5
    rating_max: float = 5.0
    max_id_length: int = 128
    max_future_skew_s: float = 300.0

    def rating_weight(self, value: float) -> float:
        return self.rating_scale * (value - self.rating_offset)


@dataclass(frozen=True)
class EventsSettings:
    #: The consume loop's settings (EVENTS_TOPIC, EVENTS_GROUP_ID, KAFKA_* ...).
    consumer: ConsumerSettings = field(
        default_factory=lambda: ConsumerSettings(
            topic=TOPIC_CLICKS,
            dlq_topic=TOPIC_CLICKS_DLQ,
            group_id="recsys-events",
            client_id="recsys-events",
            max_poll_records=2000,
            topic_partitions=6,
        )
    )
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = "rs"
    # Write layout: one script per slot group (Redis Cluster) or per chunk of users.
    redis_cluster: bool = False
    redis_script_max_events: int = 500
    grpc_port: int = 50051
    metrics_port: int = 9100
    log_level: str = "info"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)


def load_settings(env: Mapping[str, str] | None = None) -> EventsSettings:
    env = os.environ if env is None else env
    consumer = load_consumer_settings(
        env,
        "EVENTS",
        topic=TOPIC_CLICKS,
        dlq_topic=TOPIC_CLICKS_DLQ,
        group_id="recsys-events",
        max_poll_records=2000,
        topic_partitions=6,
    )
    redis_url = validate_redis_url(env_str(env, "REDIS_URL", DEFAULT_REDIS_URL))
    if consumer.topic == consumer.dlq_topic:
        raise ConfigError("EVENTS_DLQ_TOPIC must differ from EVENTS_TOPIC")
    rating_min = env_float(env, "RATING_MIN", 0.5)
    rating_max = env_float(env, "RATING_MAX", 5.0)
    if rating_max < rating_min:
        raise ConfigError(f"RATING_MAX={rating_max} must be >= RATING_MIN={rating_min}")
    validation = ValidationConfig(
        weights=parse_weights(env_str(env, "EVENT_WEIGHTS", DEFAULT_EVENT_WEIGHTS)),
        rating_scale=env_float(env, "RATING_WEIGHT_SCALE", 1.0),
        rating_offset=env_float(env, "RATING_WEIGHT_OFFSET", 0.0),
        rating_min=rating_min,
        rating_max=rating_max,
        max_id_length=env_int(env, "MAX_ID_LENGTH", 128, minimum=1, maximum=4096),
        max_future_skew_s=env_float(env, "MAX_FUTURE_SKEW_S", 300.0, minimum=0.0),
    )
    store = StoreConfig(
        recent_cap=env_int(env, "RECENT_CAP", 50, minimum=1, maximum=10_000),
        user_ttl_s=env_int(env, "USER_TTL_S", 30 * 86400, minimum=60),
        dedup_window_s=env_int(env, "DEDUP_WINDOW_S", 7 * 86400, minimum=60),
        dedup_max_user=env_int(env, "DEDUP_MAX_USER", 1000, minimum=10),
        dedup_max_global=env_int(env, "DEDUP_MAX_GLOBAL", 200_000, minimum=100),
        trending_half_life_s=env_float(env, "TRENDING_HALF_LIFE_S", 6 * 3600.0, minimum=1.0),
        trending_max_items=env_int(env, "TRENDING_MAX_ITEMS", 10_000, minimum=10),
    )
    return EventsSettings(
        consumer=consumer,
        redis_url=redis_url,
        key_prefix=env_str(env, "REDIS_KEY_PREFIX", "rs"),
        redis_cluster=env_bool(env, "REDIS_CLUSTER", False),
        redis_script_max_events=env_int(
            env, "REDIS_SCRIPT_MAX_EVENTS", 500, minimum=1, maximum=100_000
        ),
        grpc_port=env_int(env, "GRPC_PORT", 50051, minimum=0, maximum=65535),
        metrics_port=env_int(env, "METRICS_PORT", 9100, minimum=0, maximum=65535),
        log_level=env_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        validation=validation,
        store=store,
    )
