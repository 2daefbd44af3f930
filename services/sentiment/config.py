"""Sentiment service settings, read once from the environment and validated at start.

Every variable has a documented default (docs/sentiment.md); a bad value fails
the start with a ConfigError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import ConfigError
from recsys.kafka_codec import TOPIC_FEEDBACK, TOPIC_FEEDBACK_DLQ, TOPIC_FEEDBACK_SCORED
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

BACKENDS = ("inprocess", "tfserving")
DEFAULT_MODEL_DIR = "~/.cache/recsys/models/sentiment"
DEFAULT_MAX_TEXT_CHARS = 5000


def default_model_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("SENTIMENT_MODEL_DIR", "").strip() or DEFAULT_MODEL_DIR).expanduser()


#: The consume loop's defaults (overridden by SENTIMENT_TOPIC, SENTIMENT_GROUP_ID, KAFKA_* ...).
CONSUMER_DEFAULTS = ConsumerSettings(
    topic=TOPIC_FEEDBACK,
    dlq_topic=TOPIC_FEEDBACK_DLQ,
    group_id="recsys-sentiment",
    client_id="recsys-sentiment",
    max_poll_records=256,
    topic_partitions=3,
)


@dataclass(frozen=True)
class SentimentSettings:
    # --- model / backend ----------------------------------------------------------------
    backend: str = "inprocess"
    #: TF Serving's ``--model_base_path`` layout: integer version directories.
    #: A directory holding ``saved_model.pb`` itself is used as is.
    model_dir: Path = Path(DEFAULT_MODEL_DIR)  # expanded by load_settings
    #: Pin a version directory under ``model_dir`` (0 = newest, as TF Serving does).
    model_version: int = 0
    tfserving_address: str = "127.0.0.1:8500"
    tfserving_model_name: str = "sentiment"
    tfserving_signature: str = "serving_default"
    tfserving_timeout_s: float = 2.0
    # --- request limits -----------------------------------------------------------------
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_batch: int = 256
    # --- gRPC / ops ---------------------------------------------------------------------
    # Each service has its own default ports so that all three run side by side on one
    # host (the images and manifests set them explicitly).
    grpc_port: int = 50052
    grpc_workers: int = 8
    metrics_port: int = 9102
    log_level: str = "info"
    shutdown_grace_s: float = 20.0  # GRACE_S, as the recommender
    # --- Kafka path ---------------------------------------------------------------------
    #: The consume loop's settings (SENTIMENT_TOPIC, SENTIMENT_GROUP_ID, KAFKA_* ...).
    consumer: ConsumerSettings = CONSUMER_DEFAULTS
    output_topic: str = TOPIC_FEEDBACK_SCORED
    output_encoding: str = "protobuf"
    max_id_length: int = 128
    # --- Redis features ----------------------------------------------------------------
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = DEFAULT_PREFIX
    #: REDIS_URL names a node of a Redis Cluster (a user's keys share one slot, so the
    #: sentiment and suppression scripts still touch one node each).
    redis_cluster: bool = False
    # Commit only after the writes reached this many replicas (Redis WAIT; docs/sentiment.md).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    #: Half-life of the per-user sentiment average.
    half_life_s: float = 14 * 86400.0
    #: How long an item a user complained about stays out of their recommendations.
    suppress_ttl_s: float = 30 * 86400.0
    #: Suppress only when P(negative) reaches this (the label must be negative too).
    suppress_min_probability: float = 0.5


def _address(value: str, name: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} is not host:port (e.g. tfserving:8500)")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> SentimentSettings:
    env = os.environ if env is None else env
    consumer = load_consumer_settings(env, "SENTIMENT", CONSUMER_DEFAULTS)
    redis_cluster = env_bool(env, "REDIS_CLUSTER", False)
    wait_replicas, wait_timeout_ms = redis_wait_from_env(env, cluster=redis_cluster)
    output_topic = env_str(env, "SENTIMENT_OUTPUT_TOPIC", TOPIC_FEEDBACK_SCORED)
    if len({consumer.topic, output_topic, consumer.dlq_topic}) != 3:
        raise ConfigError(
            "SENTIMENT_TOPIC, SENTIMENT_OUTPUT_TOPIC and SENTIMENT_DLQ_TOPIC must all differ"
        )
    return SentimentSettings(
        backend=env_choice(env, "SENTIMENT_BACKEND", "inprocess", BACKENDS),
        model_dir=default_model_dir(env),
        model_version=env_int(env, "SENTIMENT_MODEL_VERSION", 0, minimum=0),
        tfserving_address=_address(
            env_str(env, "TFSERVING_ADDRESS", "127.0.0.1:8500"), "TFSERVING_ADDRESS"
        ),
        tfserving_model_name=env_str(env, "TFSERVING_MODEL_NAME", "sentiment"),
        tfserving_signature=env_str(env, "TFSERVING_SIGNATURE", "serving_default"),
        tfserving_timeout_s=env_float(env, "TFSERVING_TIMEOUT_S", 2.0, minimum=0.01),
        max_text_chars=env_int(
            env, "SENTIMENT_MAX_TEXT_CHARS", DEFAULT_MAX_TEXT_CHARS, minimum=1, maximum=1_000_000
        ),
        max_batch=env_int(env, "SENTIMENT_MAX_BATCH", 256, minimum=1, maximum=100_000),
        grpc_port=env_int(env, "GRPC_PORT", 50052, minimum=0, maximum=65535),
        grpc_workers=env_int(env, "GRPC_WORKERS", 8, minimum=1, maximum=256),
        metrics_port=env_int(env, "METRICS_PORT", 9102, minimum=0, maximum=65535),
        log_level=env_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        shutdown_grace_s=env_float(env, "GRACE_S", 20.0, minimum=0.0, maximum=3600.0),
        consumer=consumer,
        output_topic=output_topic,
        output_encoding=env_choice(
            env, "SENTIMENT_OUTPUT_ENCODING", "protobuf", ("protobuf", "json")
        ),
        max_id_length=env_int(env, "MAX_ID_LENGTH", 128, minimum=1, maximum=4096),
        redis_url=validate_redis_url(env_str(env, "REDIS_URL", DEFAULT_REDIS_URL)),
        key_prefix=env_str(env, "REDIS_KEY_PREFIX", DEFAULT_PREFIX),
        redis_cluster=redis_cluster,
        redis_wait_replicas=wait_replicas,
        redis_wait_timeout_ms=wait_timeout_ms,
        half_life_s=env_float(env, "SENTIMENT_HALF_LIFE_S", 14 * 86400.0, minimum=1.0),
        suppress_ttl_s=env_float(env, "SENTIMENT_SUPPRESS_TTL_S", 30 * 86400.0, minimum=1.0),
        suppress_min_probability=env_float(
            env, "SENTIMENT_SUPPRESS_MIN_PROBABILITY", 0.5, minimum=0.0, maximum=1.0
        ),
    )
