"""The recommender's read path over the shared Redis key schema.

The shared :class:`~recsys.store.redis_store.RedisFeatureStore` returns the user's whole
state, including the recent-interactions list as parsed JSON. Recommend needs only the
weights hash (what is folded in), the seen set and the live suppressions, so this reader
asks for exactly those three keys, still in one pipelined round trip, and skips decoding
up to ``RECENT_CAP`` JSON documents per request. Writes, trending and everything else are
the shared store's.

On a single server the three commands go out as one pre-built RESP write on a connection
this reader keeps per thread (the gRPC server runs requests on one loop thread per
process), and the replies are decoded to text by hiredis. Through redis-py's pipeline
object (pool checkout and release, per-command packing, response callbacks, retry
wrappers) the state read was a large share of the handler's CPU for one round trip of
three commands (docs/benchmarks.md, History, "The handler"). A Redis Cluster client keeps
the ordinary pipeline (it routes by slot).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from recsys.store.model import UserState
from recsys.store.redis_store import RedisFeatureStore, resp_command


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RecommenderRedisStore(RedisFeatureStore):
    """``get_user_state`` without ``recent`` (always empty): one round trip, three keys."""

    def __init__(self, client: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(client, *args, **kwargs)
        self._local = threading.local()
        self._own: list[Any] = []  # every per-thread connection, closed by close()
        self._own_lock = threading.Lock()

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        now = time.time() if now is None else now
        if self.cluster or not hasattr(self.client, "connection_pool"):
            seen, weights, suppressed = self._pipelined(user_id, now)
            self.round_trips += 1
            return UserState(
                recent=[],
                seen={_text(s) for s in seen},
                weights={_text(k): float(v) for k, v in weights.items()},
                suppressed={_text(s) for s in suppressed},
            )
        seen, pairs, suppressed = self._direct(user_id, now)  # already text
        self.round_trips += 1
        if isinstance(pairs, dict):  # RESP3 (protocol=3 in REDIS_URL)
            weights = {k: float(v) for k, v in pairs.items()}
        else:
            weights = dict(zip(pairs[::2], map(float, pairs[1::2]), strict=True))
        return UserState(recent=[], seen=set(seen), weights=weights, suppressed=set(suppressed))

    def _pipelined(self, user_id: str, now: float) -> list[Any]:
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(keys.seen(user_id))
        pipe.hgetall(keys.weights(user_id))
        pipe.zrangebyscore(keys.suppressed(user_id), f"({now!r}", "+inf")
        out: list[Any] = pipe.execute()
        return out

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            pool = self.client.connection_pool
            conn = pool.connection_class(**{**pool.connection_kwargs, "decode_responses": True})
            self._local.conn = conn
            with self._own_lock:
                self._own.append(conn)
        return conn

    def _direct(self, user_id: str, now: float) -> tuple[Any, Any, Any]:
        """The three replies, read from this thread's own connection.

        Any failure drops the connection (a half-read reply must never be parsed by the
        next request). A connection error is retried once on a fresh connection: a
        connection the server closed since its last use (Redis restarted) fails on first use.
        """
        import redis

        keys = self.keys
        packed = (
            resp_command("SMEMBERS", keys.seen(user_id))
            + resp_command("HGETALL", keys.weights(user_id))
            + resp_command("ZRANGEBYSCORE", keys.suppressed(user_id), f"({now!r}", "+inf")
        ).encode("utf-8")
        conn = self._connection()
        for attempt in (0, 1):
            try:
                conn.send_packed_command([packed])
                return conn.read_response(), conn.read_response(), conn.read_response()
            except redis.ConnectionError:
                conn.disconnect()
                if attempt:
                    raise
            except BaseException:
                conn.disconnect()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._own_lock:
            own, self._own = self._own, []
        for conn in own:
            conn.disconnect()
        super().close()
