"""Events service settings, read once from the environment and validated at start.

Every variable has a documented default (docs/events.md); a bad value fails the
start with a ConfigError naming the variable.
"""

from __future__ import annotations

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
    redis_wait_from_env,
    validate_redis_url,
)
from recsys.store.keys import DEFAULT_PREFIX
from recsys.store.model import StoreConfig
from recsys.weights import EventWeights


@dataclass(frozen=True)
class ValidationConfig(EventWeights):
    """What the pure core needs to accept or reject an event, and (inherited) to weigh it."""

    rating_min: float = 0.5
    rating_max: float = 5.0
    max_id_length: int = 128
    max_future_skew_s: float = 300.0


#: The consume loop's defaults (overridden by EVENTS_TOPIC, EVENTS_GROUP_ID, KAFKA_* ...).
CONSUMER_DEFAULTS = ConsumerSettings(
    topic=TOPIC_CLICKS,
    dlq_topic=TOPIC_CLICKS_DLQ,
    group_id="recsys-events",
    client_id="recsys-events",
    max_poll_records=2000,
    topic_partitions=6,
)


@dataclass(frozen=True)
class EventsSettings:
    #: The consume loop's settings (EVENTS_TOPIC, EVENTS_GROUP_ID, KAFKA_* ...).
    consumer: ConsumerSettings = CONSUMER_DEFAULTS
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = DEFAULT_PREFIX
    # Write layout: one script per slot group (Redis Cluster) or per chunk of users.
    redis_cluster: bool = False
    redis_script_max_events: int = 500
    # Commit only after each batch's writes reached this many replicas (Redis WAIT):
    # 0 keeps the asynchronous replication a replica-less Redis has (docs/events.md).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    # Health-only gRPC and metrics; each service has its own default ports so that all
    # three run side by side on one host (the images and manifests set them explicitly).
    grpc_port: int = 50053
    metrics_port: int = 9101
    log_level: str = "info"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)


def load_settings(env: Mapping[str, str] | None = None) -> EventsSettings:
    env = os.environ if env is None else env
    consumer = load_consumer_settings(env, "EVENTS", CONSUMER_DEFAULTS)
    redis_url = validate_redis_url(env_str(env, "REDIS_URL", DEFAULT_REDIS_URL))
    if consumer.topic == consumer.dlq_topic:
        raise ConfigError("EVENTS_DLQ_TOPIC must differ from EVENTS_TOPIC")
    rating_min = env_float(env, "RATING_MIN", 0.5)
    rating_max = env_float(env, "RATING_MAX", 5.0)
    if rating_max < rating_min:
        raise ConfigError(f"RATING_MAX={rating_max} must be >= RATING_MIN={rating_min}")
    weights = EventWeights.from_env(env)
    validation = ValidationConfig(
        weights=weights.weights,
        rating_scale=weights.rating_scale,
        rating_offset=weights.rating_offset,
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
    redis_cluster = env_bool(env, "REDIS_CLUSTER", False)
    wait_replicas, wait_timeout_ms = redis_wait_from_env(env, cluster=redis_cluster)
    return EventsSettings(
        consumer=consumer,
        redis_url=redis_url,
        key_prefix=env_str(env, "REDIS_KEY_PREFIX", DEFAULT_PREFIX),
        redis_cluster=redis_cluster,
        redis_wait_replicas=wait_replicas,
        redis_wait_timeout_ms=wait_timeout_ms,
        redis_script_max_events=env_int(
            env, "REDIS_SCRIPT_MAX_EVENTS", 500, minimum=1, maximum=100_000
        ),
        grpc_port=env_int(env, "GRPC_PORT", 50053, minimum=0, maximum=65535),
        metrics_port=env_int(env, "METRICS_PORT", 9101, minimum=0, maximum=65535),
        log_level=env_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        validation=validation,
        store=store,
    )
