"""Redis client factory with fail-fast validation."""

from __future__ import annotations

from typing import Any

from recsys.errors import ConfigError
from recsys.settings import validate_redis_url


def make_redis(url: str, *, check: bool = True, timeout_s: float = 5.0, **overrides: Any) -> Any:
    """A ``redis.Redis`` for ``url``; with ``check`` it pings and raises ConfigError if down."""
    import redis

    validate_redis_url(url)
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        **overrides,
    )
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ConfigError(
                f"cannot reach Redis at {url} ({exc}); set REDIS_URL or start one with "
                "`recsys infra up`"
            ) from None
    return client
