"""The recommender's state reader on a Redis Cluster.

Every per-user key carries the hash tag ``{u:<user>}`` (recsys/store/keys.py), so the three
keys a Recommend reads live in one slot, on one node: the cluster client's pipeline sends
them to that node in one round trip, exactly as on a single server. The global keys
(trending, counters) share the ``{g}`` tag and so one node. Nothing else changes; this module
only builds the same reader over a cluster-aware client.
"""

from __future__ import annotations

from typing import Any

from recsys.store import KeySchema
from services.recommender.store_reader import RecommenderRedisStore


def open_cluster_store(redis_url: str, key_prefix: str, timeout_s: float = 0.25) -> Any:
    """A :class:`RecommenderRedisStore` over ``redis.cluster.RedisCluster`` (``redis_url``
    names any startup node; the others are discovered)."""
    from redis.cluster import RedisCluster

    client: Any = RedisCluster.from_url(redis_url, socket_timeout=timeout_s,
                                        socket_connect_timeout=timeout_s)  # fmt: skip
    return RecommenderRedisStore(client, KeySchema(key_prefix), cluster=True)
