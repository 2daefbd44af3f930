"""Recommender service settings, read once from the environment and validated at start.

Every variable has a default (listed in ``docs/recommender.md``); a bad value fails the
start with a :class:`~recsys.errors.ConfigError` naming the variable, so a broken
deployment never reaches its first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recsys.auth import AUTH_OFF, AuthSettings
from recsys.errors import ConfigError
from recsys.settings import (
    DEFAULT_REDIS_URL,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_str,
    validate_redis_url,
)
from recsys.store.keys import DEFAULT_PREFIX

# How the training history stored in the model combines with the weights hash in Redis.
#   max:  per item, the larger of the two. Right when Redis holds the whole history (the model
#         was trained from Redis) and when it holds only events since training (disjoint items).
#   sum:  history + Redis; right only when Redis holds just the events since training.
#   none: Redis weights alone (the trained history is ignored for fold-in).
HISTORY_MODES = ("max", "sum", "none")


def default_model_dir(env: Mapping[str, str] | None = None) -> str:
    """``MODEL_STORE`` (where ``recsys train`` publishes by default), else ``models``."""
    env = os.environ if env is None else env
    return env.get("MODEL_STORE", "").strip() or "models"


@dataclass(frozen=True)
class TlsSettings:
    cert_file: str
    key_file: str
    client_ca_file: str = ""  # set: clients must present a certificate signed by this CA

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca_file)

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(cert chain, private key, client CA or None), read now so errors name the file."""

        def load(name: str, path: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"{name}={path!r} cannot be read: {exc.strerror}") from None

        cert = load("TLS_CERT_FILE", self.cert_file)
        key = load("TLS_KEY_FILE", self.key_file)
        ca = load("TLS_CLIENT_CA_FILE", self.client_ca_file) if self.client_ca_file else None
        return cert, key, ca


@dataclass(frozen=True)
class RecommenderSettings:
    model_dir: str = ""
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = DEFAULT_PREFIX
    host: str = "0.0.0.0"
    # 50051 / 9100: what frontends target. Each service has its own default ports so that
    # all three run side by side on one host (the images and manifests set them explicitly).
    grpc_port: int = 50051
    metrics_port: int = 9100
    # HTTP/JSON beside gRPC on the same loop (docs/http.md); 8080 is not taken by any other
    # service's default. 0 picks a free port.
    http_enabled: bool = True
    http_port: int = 8080
    log_level: str = "info"
    workers: int = 1
    threads: int = 8
    max_k: int = 200
    default_explain_k: int = 10
    max_id_length: int = 128
    max_exclude: int = 1000
    max_categories: int = 50
    max_batch: int = 16
    history_mode: str = "max"
    trending_cache_s: float = 1.0
    trending_overfetch: int = 50
    # Approximate candidate retrieval (ann.py): used for catalogs of ann_min_items or more
    # whose model was published with an index.
    ann_min_items: int = 200_000
    ann_fetch: int = 200
    ann_expansion: int = 200
    ann_exact_below: float = 0.1
    redis_timeout_s: float = 0.25
    # REDIS_URL names a Redis Cluster node; the per-user hash tags keep reads one round trip.
    redis_cluster: bool = False
    redis_retry_s: float = 1.0
    startup_timeout_s: float = 60.0
    reload_interval_s: float = 5.0
    grace_s: float = 20.0
    # Balancing is per connection (SO_REUSEPORT across workers, L4 Services across pods): a
    # frontend's long-lived channel stays on one worker until it reconnects. A GOAWAY after
    # this age (gRPC adds +-10% jitter) makes clients reconnect and re-spread. 0 = never.
    max_connection_age_s: float = 300.0
    noop: bool = False
    tls: TlsSettings | None = None
    # Filled by ``__main__`` from ``recsys.auth.load_auth_settings`` (AUTH_MODE defaults
    # to required there); a settings object built in code (tests) starts with auth off.
    auth: AuthSettings = AUTH_OFF

    def __post_init__(self) -> None:
        if not self.model_dir:
            object.__setattr__(self, "model_dir", default_model_dir())


def _tls(env: Mapping[str, str]) -> TlsSettings | None:
    cert = env_str(env, "TLS_CERT_FILE", "", allow_empty=True)
    key = env_str(env, "TLS_KEY_FILE", "", allow_empty=True)
    ca = env_str(env, "TLS_CLIENT_CA_FILE", "", allow_empty=True)
    if not cert and not key:
        if ca:
            raise ConfigError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE as well")
        return None
    if not cert or not key:
        raise ConfigError("set both TLS_CERT_FILE and TLS_KEY_FILE (or neither for plaintext)")
    tls = TlsSettings(cert, key, ca)
    tls.read()  # fail at start when a file is missing or unreadable
    return tls


def load_settings(env: Mapping[str, str] | None = None) -> RecommenderSettings:
    env = os.environ if env is None else env
    cpus = os.cpu_count() or 1
    workers = env_int(env, "WORKERS", 0, minimum=0, maximum=256)
    settings = RecommenderSettings(
        model_dir=env_str(env, "RECSYS_MODEL_DIR", default_model_dir(env)),
        redis_url=validate_redis_url(env_str(env, "REDIS_URL", DEFAULT_REDIS_URL)),
        key_prefix=env_str(env, "REDIS_KEY_PREFIX", DEFAULT_PREFIX),
        host=env_str(env, "GRPC_HOST", "0.0.0.0"),
        grpc_port=env_int(env, "GRPC_PORT", 50051, minimum=0, maximum=65535),
        metrics_port=env_int(env, "METRICS_PORT", 9100, minimum=0, maximum=65535),
        http_enabled=env_bool(env, "HTTP_ENABLED", True),
        http_port=env_int(env, "HTTP_PORT", 8080, minimum=0, maximum=65535),
        log_level=env_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        workers=workers or cpus,
        threads=env_int(env, "GRPC_THREADS", 8, minimum=1, maximum=1024),
        max_k=env_int(env, "MAX_K", 200, minimum=1, maximum=100_000),
        default_explain_k=env_int(env, "EXPLAIN_DEFAULT_K", 10, minimum=1, maximum=1000),
        max_id_length=env_int(env, "MAX_ID_LENGTH", 128, minimum=1, maximum=4096),
        max_exclude=env_int(env, "MAX_EXCLUDE", 1000, minimum=0, maximum=1_000_000),
        max_categories=env_int(env, "MAX_CATEGORIES", 50, minimum=0, maximum=10_000),
        max_batch=env_int(env, "MAX_BATCH", 16, minimum=1, maximum=1000),
        history_mode=env_choice(env, "FOLDIN_HISTORY", "max", HISTORY_MODES),
        trending_cache_s=env_float(env, "TRENDING_CACHE_S", 1.0, minimum=0.0, maximum=3600.0),
        trending_overfetch=env_int(env, "TRENDING_OVERFETCH", 50, minimum=0, maximum=100_000),
        ann_min_items=env_int(env, "ANN_MIN_ITEMS", 200_000, minimum=0),
        ann_fetch=env_int(env, "ANN_FETCH", 200, minimum=1, maximum=100_000),
        ann_expansion=env_int(env, "ANN_EXPANSION", 200, minimum=1, maximum=100_000),
        ann_exact_below=env_float(env, "ANN_EXACT_BELOW", 0.1, minimum=0.0, maximum=1.0),
        redis_timeout_s=env_float(env, "REDIS_TIMEOUT_S", 0.25, minimum=0.001, maximum=60.0),
        redis_cluster=env_bool(env, "REDIS_CLUSTER", False),
        redis_retry_s=env_float(env, "REDIS_RETRY_S", 1.0, minimum=0.0, maximum=600.0),
        startup_timeout_s=env_float(env, "STARTUP_TIMEOUT_S", 60.0, minimum=0.0),
        reload_interval_s=env_float(env, "RELOAD_INTERVAL_S", 5.0, minimum=0.0),
        grace_s=env_float(env, "GRACE_S", 20.0, minimum=0.0, maximum=3600.0),
        max_connection_age_s=env_float(
            env, "MAX_CONNECTION_AGE_S", 300.0, minimum=0.0, maximum=7 * 86400.0
        ),
        noop=env_bool(env, "RECOMMENDER_NOOP", False),
        tls=_tls(env),
    )
    ports = {"GRPC_PORT": settings.grpc_port, "METRICS_PORT": settings.metrics_port}
    if settings.http_enabled:
        ports["HTTP_PORT"] = settings.http_port
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in taken:
            raise ConfigError(f"{name}={port} is also {taken[port]}: give each port its own value")
        taken[port] = name
    return settings
