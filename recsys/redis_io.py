"""Redis client factories with fail-fast validation (used by ``recsys.store.open_store``)."""

from __future__ import annotations

from typing import Any

from recsys.errors import ConfigError
from recsys.settings import (
    SENTINEL_SCHEME,
    parse_sentinel_url,
    redacted_url,
    validate_redis_url,
)
from recsys.store.base import StorePermissionError, StoreUnavailableError


def make_redis(url: str, *, check: bool = True, timeout_s: float = 5.0, **overrides: Any) -> Any:
    """A ``redis.Redis`` for ``url``; with ``check`` it pings and raises ConfigError if down."""
    import redis

    validate_redis_url(url)
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        client = _sentinel_primary(url, timeout_s, overrides)
    else:
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


def _sentinel_primary(url: str, timeout_s: float, overrides: dict[str, Any]) -> Any:
    """A ``redis.Redis`` on the current primary of a Sentinel-monitored service.

    redis-py's Sentinel pool asks the Sentinels for the primary on every new connection,
    and drops a connection whose server answers READONLY (a demoted primary), so after a
    failover the next call (the store's retry) reaches the promoted replica: the same
    client object, the same key schema, nothing for the services to do but retry.
    """
    from redis.sentinel import Sentinel

    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(parsed.sentinels),
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s},
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return sentinel.master_for(
        parsed.service,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        health_check_interval=30,
        **overrides,
    )
