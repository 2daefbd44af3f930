"""Console settings, read once from the environment and validated at start.

The console reads the other services only over their public surfaces: the recommender's
gRPC API (``CONSOLE_RECOMMENDER_TARGET``), the feature store in Redis (``REDIS_URL``,
``REDIS_KEY_PREFIX``, through ``recsys.store``) and each service's Prometheus endpoint
(``CONSOLE_SCRAPE``). Defaults are the other services' own default ports on one host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from recsys.errors import ConfigError
from recsys.settings import (
    DEFAULT_REDIS_URL,
    env_choice,
    env_float,
    env_int,
    env_str,
    validate_redis_url,
)
from recsys.store.keys import DEFAULT_PREFIX

#: The services' default metrics endpoints on one host (docs/operations.md lists the ports).
DEFAULT_SCRAPE = (
    "events=http://127.0.0.1:9101/metrics,"
    "recommender=http://127.0.0.1:9100/metrics,"
    "sentiment=http://127.0.0.1:9102/metrics"
)


@dataclass(frozen=True)
class ConsoleSettings:
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = DEFAULT_PREFIX
    host: str = "0.0.0.0"
    # 8090 / 9103: taken by no other service's default (gRPC 50051-50053, metrics 9100-9102,
    # the recommender's HTTP 8080)
    port: int = 8090
    metrics_port: int = 9103
    recommender_target: str = "127.0.0.1:50051"
    # The recommender refuses calls without credentials unless AUTH_MODE=off: the console is
    # a client like any other, with a token whose client may call Recommend, SimilarItems
    # and Explain (docs/recommender.md, "Authentication").
    recommender_token: str = field(default="", repr=False)
    scrape: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: parse_scrape(DEFAULT_SCRAPE)
    )
    # Empty: every action (forget a user, lift a suppression) is refused; the pages are
    # read-only. Set: an action needs ``Authorization: Bearer <token>``.
    token: str = ""
    k: int = 10
    rpc_timeout_s: float = 1.0
    scrape_timeout_s: float = 1.0
    redis_timeout_s: float = 0.5
    trending_depth: int = 100
    grace_s: float = 5.0
    log_level: str = "info"


def parse_scrape(value: str) -> tuple[tuple[str, str], ...]:
    """``name=url,...`` → ((name, url), ...); each URL http(s) with a host."""
    out: list[tuple[str, str]] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        parsed = urlparse(url.strip())
        if not sep or not name.strip() or parsed.scheme not in ("http", "https") \
                or not parsed.netloc:  # fmt: skip
            raise ConfigError(f"CONSOLE_SCRAPE entry {part!r} must be name=http://host:port/path")
        out.append((name.strip(), url.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"CONSOLE_SCRAPE names a service twice: {', '.join(names)}")
    return tuple(out)


def load_settings(env: Mapping[str, str] | None = None) -> ConsoleSettings:
    env = os.environ if env is None else env
    settings = ConsoleSettings(
        redis_url=validate_redis_url(env_str(env, "REDIS_URL", DEFAULT_REDIS_URL)),
        key_prefix=env_str(env, "REDIS_KEY_PREFIX", DEFAULT_PREFIX),
        host=env_str(env, "CONSOLE_HOST", "0.0.0.0"),
        port=env_int(env, "CONSOLE_PORT", 8090, minimum=0, maximum=65535),
        metrics_port=env_int(env, "METRICS_PORT", 9103, minimum=0, maximum=65535),
        recommender_target=env_str(env, "CONSOLE_RECOMMENDER_TARGET", "127.0.0.1:50051"),
        recommender_token=env_str(env, "CONSOLE_RECOMMENDER_TOKEN", "", allow_empty=True),
        scrape=parse_scrape(env_str(env, "CONSOLE_SCRAPE", DEFAULT_SCRAPE, allow_empty=True)),
        token=env_str(env, "CONSOLE_TOKEN", "", allow_empty=True),
        k=env_int(env, "CONSOLE_K", 10, minimum=1, maximum=100),
        rpc_timeout_s=env_float(env, "CONSOLE_RPC_TIMEOUT_S", 1.0, minimum=0.01, maximum=60.0),
        scrape_timeout_s=env_float(
            env, "CONSOLE_SCRAPE_TIMEOUT_S", 1.0, minimum=0.01, maximum=60.0
        ),
        redis_timeout_s=env_float(env, "REDIS_TIMEOUT_S", 0.5, minimum=0.001, maximum=60.0),
        trending_depth=env_int(env, "CONSOLE_TRENDING_DEPTH", 100, minimum=1, maximum=10_000),
        grace_s=env_float(env, "GRACE_S", 5.0, minimum=0.0, maximum=3600.0),
        log_level=env_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
    )
    if settings.port and settings.port == settings.metrics_port:
        raise ConfigError(f"CONSOLE_PORT and METRICS_PORT are both {settings.port}")
    return settings
