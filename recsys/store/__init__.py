"""User and item state shared by the services (Redis key schema and store interface).

``open_store(url)`` is the one way a service gets a store: the URL scheme picks
the backend (``memory://`` for an in-process store: examples, unit tests;
``redis://``/``rediss://``/``unix://`` for Redis, ``redis+sentinel://`` for the primary
a set of Sentinels names, followed across failovers) and ``cluster`` (the services'
``REDIS_CLUSTER``) says the URL names a node of a Redis Cluster. The opener
builds the client, so no service imports ``redis``; a store raises
:class:`StoreUnavailableError` when Redis fails, never the client's own errors.
"""

from __future__ import annotations

import contextlib

from recsys.errors import ConfigError
from recsys.settings import redacted_url
from recsys.store.base import FeatureStore, StorePermissionError, StoreUnavailableError
from recsys.store.keys import KeySchema
from recsys.store.model import (
    ApplyResult,
    FeatureEvent,
    Interaction,
    PendingApply,
    Sentiment,
    StoreConfig,
    UserState,
)

__all__ = [
    "ApplyResult",
    "FeatureEvent",
    "FeatureStore",
    "Interaction",
    "KeySchema",
    "PendingApply",
    "Sentiment",
    "StoreConfig",
    "StorePermissionError",
    "StoreUnavailableError",
    "UserState",
    "open_store",
]


def open_store(
    url: str,
    *,
    prefix: str | None = None,
    config: StoreConfig | None = None,
    cluster: bool = False,
    timeout_s: float = 5.0,
    max_events_per_script: int | None = None,
    check: bool = True,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 1000,
) -> FeatureStore:
    """A FeatureStore for ``url`` (see the module docstring for the choice of backend).

    ``cluster``: ``url`` names any node of a Redis Cluster; the store talks through a
    cluster client (it learns the slot map and follows redirects) and writes in the
    slot-grouped layout a cluster requires. ``timeout_s`` bounds each connect and each
    reply. With ``check`` the store pings and loads its scripts now, so a Redis that
    cannot serve fails the start with a ConfigError saying what to set; a service that
    waits for Redis itself (the recommender) passes ``check=False``.

    ``wait_replicas``: every write batch ends with ``WAIT wait_replicas wait_timeout_ms``
    on its connection and fails (StoreUnavailableError, so the caller retries and does
    not commit) when fewer replicas acknowledged it; 0 (the default) sends no WAIT. The
    in-process store has no replicas and refuses a positive value.
    """
    if url.startswith("memory://"):
        from recsys.store.memory import InMemoryFeatureStore

        if wait_replicas:
            raise ConfigError("REDIS_WAIT_REPLICAS needs a Redis with replicas, not memory://")
        return InMemoryFeatureStore(config)
    from recsys.redis_io import make_cluster, make_redis
    from recsys.store.redis_store import RedisFeatureStore

    keys = KeySchema(prefix) if prefix else KeySchema()
    layout: dict[str, int] = {}
    if max_events_per_script is not None:
        layout["max_events_per_script"] = max_events_per_script
    try:
        if cluster:
            client = make_cluster(url, timeout_s=timeout_s)
        else:
            client = make_redis(url, check=False, timeout_s=timeout_s)
    except StoreUnavailableError as exc:
        if not check:
            raise
        raise _unreachable(url, cluster, exc) from None
    if wait_replicas and cluster:
        raise ConfigError(
            "REDIS_WAIT_REPLICAS is not supported with REDIS_CLUSTER (WAIT is per node); "
            "use a primary with replicas behind Sentinel (redis+sentinel://)"
        )
    store = RedisFeatureStore(
        client,
        keys,
        config,
        cluster=cluster,
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_timeout_ms,
        **layout,
    )
    if check:
        try:
            store.ping()
            store.load_scripts()
        except (StoreUnavailableError, StorePermissionError) as exc:
            with contextlib.suppress(StoreUnavailableError, StorePermissionError):
                store.close()
            if isinstance(exc, StorePermissionError):
                raise  # already names the user and what was denied; not an outage
            raise _unreachable(url, cluster, exc) from None
    return store


def _unreachable(url: str, cluster: bool, exc: Exception) -> ConfigError:
    what = "a Redis Cluster node" if cluster else "Redis"
    return ConfigError(
        f"cannot reach {what} at {redacted_url(url)} ({exc}); set REDIS_URL (and "
        "REDIS_CLUSTER) or start one with `recsys infra up`"
    )
