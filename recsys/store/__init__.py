"""User and item state shared by the services (Redis key schema and store interface).

``open_store(url)`` picks the backend from the URL scheme: ``memory://`` for an
in-process store (examples, unit tests), ``redis://``/``rediss://``/``unix://``
for Redis.
"""

from __future__ import annotations

from recsys.store.base import FeatureStore
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
    "UserState",
    "open_store",
]


def open_store(
    url: str, *, prefix: str | None = None, config: StoreConfig | None = None, check: bool = True
) -> FeatureStore:
    """A FeatureStore for ``url``; Redis stores ping at open (ConfigError when unreachable)."""
    if url.startswith("memory://"):
        from recsys.store.memory import InMemoryFeatureStore

        return InMemoryFeatureStore(config)
    from recsys.redis_io import make_redis
    from recsys.store.redis_store import RedisFeatureStore

    client = make_redis(url, check=check)
    keys = KeySchema(prefix) if prefix else KeySchema()
    return RedisFeatureStore(client, keys, config)
