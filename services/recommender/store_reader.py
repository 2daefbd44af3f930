"""The recommender's read path over the shared Redis key schema.

The shared :class:`~recsys.store.redis_store.RedisFeatureStore` returns the user's whole
state, including the recent-interactions list as parsed JSON. Recommend needs only the
weights hash (what is folded in), the seen set and the live suppressions, so this reader
asks for exactly those three keys, still in one pipelined round trip, and skips decoding
up to ``RECENT_CAP`` JSON documents per request. Writes, trending and everything else are
the shared store's.
"""

from __future__ import annotations

import time

from recsys.store.model import UserState
from recsys.store.redis_store import RedisFeatureStore


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RecommenderRedisStore(RedisFeatureStore):
    """``get_user_state`` without ``recent`` (always empty): one round trip, three keys."""

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        now = time.time() if now is None else now
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(keys.seen(user_id))
        pipe.hgetall(keys.weights(user_id))
        pipe.zrangebyscore(keys.suppressed(user_id), f"({now!r}", "+inf")
        seen, weights, suppressed = pipe.execute()
        self.round_trips += 1
        return UserState(
            recent=[],
            seen={_text(s) for s in seen},
            weights={_text(k): float(v) for k, v in weights.items()},
            suppressed={_text(s) for s in suppressed},
        )
