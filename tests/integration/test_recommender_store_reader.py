"""The recommender's direct state read against a real redis-server.

It writes RESP by hand on a connection of its own, so these check what the pipeline did for
free: the same state as the shared store, byte lengths of non-ASCII ids, a connection the
server dropped, and an outage reported as a Redis error (the service turns it into degraded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from recsys.redis_io import make_redis
from recsys.store import FeatureEvent, KeySchema
from recsys.store.redis_store import RedisFeatureStore, resp_command
from services.recommender.store_reader import RecommenderRedisStore

pytestmark = pytest.mark.integration


def test_resp_command_counts_bytes_not_characters() -> None:
    assert resp_command("GET", "é") == "*2\r\n$3\r\nGET\r\n$2\r\né\r\n"


def test_direct_read_equals_the_shared_store_state_without_recent(
    redis_url: str, key_prefix: str
) -> None:
    keys = KeySchema(key_prefix)
    shared = RedisFeatureStore(make_redis(redis_url), keys)
    reader = RecommenderRedisStore(make_redis(redis_url), keys)
    try:
        now = time.time()
        users = ["u1", "usér-ünïcode", "u3"]
        events = [
            FeatureEvent(f"e{n}", user, item, "click", 1.5 + n, now)
            for n, (user, item) in enumerate(
                [("u1", "a"), ("u1", "b"), ("usér-ünïcode", "ïtem-ß"), ("usér-ünïcode", "a")]
            )
        ]
        shared.apply_events(events, now)
        shared.suppress("u1", "b", ttl_s=60, now=now)
        shared.suppress("u1", "gone", ttl_s=1, now=now - 10)  # expired: not returned
        for user in users:
            want = shared.get_user_state(user, now)
            got = reader.get_user_state(user, now)
            assert got.recent == []
            assert (got.seen, got.weights, got.suppressed) == (
                want.seen, want.weights, want.suppressed
            )  # fmt: skip
        assert reader.get_user_state("u1", now).suppressed == {"b"}
        assert reader.round_trips == len(users) + 1
    finally:
        shared.close()
        reader.close()


def test_direct_read_survives_a_redis_restart_and_reports_an_outage(
    redis_server_factory: Callable[..., Any], key_prefix: str
) -> None:
    server = redis_server_factory(appendonly=False)
    keys = KeySchema(key_prefix)
    reader = RecommenderRedisStore(make_redis(server.url, timeout_s=0.5), keys)
    try:
        client = make_redis(server.url)
        client.hset(keys.weights("u"), mapping={"a": 2.0})
        client.close()
        assert reader.get_user_state("u").weights == {"a": 2.0}
        server.stop()
        server.start()
        # the connection the old server closed is replaced without the caller noticing
        # (the data may or may not have survived the restart; the read must not fail)
        assert reader.get_user_state("u").weights in ({}, {"a": 2.0})
        server.stop()
        with pytest.raises(redis.RedisError):
            reader.get_user_state("u")
    finally:
        reader.close()
