"""Redis client factories with fail-fast validation (used by ``recsys.store.open_store``)."""

from __future__ import annotations

from typing import Any

from recsys.errors import ConfigError
from recsys.settings import redacted_url, validate_redis_url
from recsys.store.base import StorePermissionError, StoreUnavailableError


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
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            raise StorePermissionError(
                f"Redis at {redacted_url(url)} refused its ACL user ({exc}); check the user "
                "and password in REDIS_URL and the server's ACL (`recsys redis-acl`)"
            ) from None
        except redis.RedisError as exc:
            raise ConfigError(
                f"cannot reach Redis at {redacted_url(url)} ({exc}); set REDIS_URL or start "
                "one with `recsys infra up`"
            ) from None
    return client


def make_cluster(url: str, *, timeout_s: float = 5.0, **overrides: Any) -> Any:
    """A ``redis.cluster.RedisCluster`` whose startup node is ``url``.

    The client reads the slot map from that node when it is built, so an unreachable
    cluster fails here: as StoreUnavailableError, like any later call of the store.
    """
    from redis.cluster import RedisCluster
    from redis.exceptions import (
        AuthenticationError,
        NoPermissionError,
        RedisClusterException,
        RedisError,
    )

    validate_redis_url(url)
    try:
        return RedisCluster.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **overrides
        )
    except (AuthenticationError, NoPermissionError) as exc:
        raise StorePermissionError(
            f"Redis Cluster at {redacted_url(url)} refused its ACL user: {type(exc).__name__}: "
            f"{exc}; check the user and password in REDIS_URL and the cluster's ACL"
        ) from exc
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StoreUnavailableError(
            f"Redis Cluster at {redacted_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc
