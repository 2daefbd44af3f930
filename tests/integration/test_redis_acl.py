"""Least privilege in Redis: the generated ACL file, loaded by a real redis-server.

The server starts from what ``recsys redis-acl`` prints (default user off), and every
store is opened as a service's user through a ``redis://user:password@`` URL, as the
services do from REDIS_URL. Each service's operations must succeed as its user; what
it never does (writes for the recommender, events for the sentiment service, FLUSHALL,
CONFIG, KEYS, keys under another prefix) must fail with StorePermissionError or NOPERM.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from recsys.redis_io import make_redis
from recsys.store import FeatureEvent, FeatureStore, StorePermissionError, open_store
from recsys.store.acl import SERVICES, acl_user, password_env
from recsys.store.keys import KeySchema
from recsys_tools.commands.redis_acl import acl_file
from recsys_tools.infra.redis_server import RedisServer
from services.recommender.training import read_redis_weights

pytestmark = pytest.mark.integration

NOW = time.time()


def _password(service: str) -> str:
    return f"pw-{service}-not-a-real-one"


@pytest.fixture(scope="module")
def acl_prefix() -> str:
    """One prefix for the module's server (no test leaves data another one reads)."""
    return f"test-acl-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def acl_urls(tmp_path_factory: pytest.TempPathFactory, acl_prefix: str) -> Iterator[dict[str, str]]:
    """Service -> REDIS_URL with its user and password, on a server run from the ACL file."""
    text, missing = acl_file(acl_prefix, {password_env(s): _password(s) for s in SERVICES})
    assert missing == []
    assert text.startswith("user default off\n")
    work = tmp_path_factory.mktemp("redis-acl")
    path = work / "users.acl"
    path.write_text(text, encoding="utf-8")
    server = RedisServer(work / "redis", aclfile=path)
    server.start()
    try:
        yield {
            s: f"redis://{acl_user(s)}:{_password(s)}@127.0.0.1:{server.port}/0" for s in SERVICES
        }
    finally:
        server.stop()


@pytest.fixture
def stores(acl_urls: dict[str, str], acl_prefix: str) -> Iterator[Callable[..., FeatureStore]]:
    """Opens stores as a service's user (the recommender unchecked, as it opens its own)."""
    opened: list[FeatureStore] = []

    def open_as(service: str, prefix: str = acl_prefix) -> FeatureStore:
        check = service != "recommender"
        store = open_store(acl_urls[service], prefix=prefix, check=check)
        opened.append(store)
        return store

    try:
        yield open_as
    finally:
        for store in opened:
            store.close()


def _events(user: str) -> list[FeatureEvent]:
    return [
        FeatureEvent(f"{user}-e1", user, "i1", "click", 2.0, NOW - 10),
        FeatureEvent(f"{user}-e2", user, "i2", "purchase", 8.0, NOW - 5),
    ]


def test_the_default_user_is_off_in_the_generated_acl(acl_urls: dict[str, str]) -> None:
    """Without a user in REDIS_URL nothing is allowed: the file turns the default off."""
    anonymous = acl_urls["events"].replace(f"{acl_user('events')}:{_password('events')}@", "")
    client = redis.Redis.from_url(anonymous)
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_each_service_user_can_do_everything_its_service_does(
    stores: Callable[..., FeatureStore], acl_urls: dict[str, str], acl_prefix: str
) -> None:
    events = stores("events")
    result = events.apply_events(_events("u1"), now=NOW)
    assert result.user_applied == 2
    assert events.begin_apply(_events("u2"), now=NOW).result().user_applied == 2
    assert events.apply_events(_events("u1"), now=NOW).user_applied == 0  # dedup reads too
    assert events.ping()

    sentiment = stores("sentiment")
    assert sentiment.ping()
    assert sentiment.update_sentiment("u1", -0.5, NOW, 3600.0, "f1", now=NOW) is not None
    sentiment.suppress("u1", "i1", 3600.0, now=NOW)
    sentiment.suppress("u1", "i3", 3600.0, now=NOW)
    assert sentiment.unsuppress("u1", "i3", now=NOW)

    recommender = stores("recommender")
    assert recommender.ping()
    serving = recommender.get_serving_state("u1", now=NOW)
    assert serving.weights == {"i1": 2.0, "i2": 8.0}
    assert serving.suppressed == {"i1"} and not serving.forgotten
    full = recommender.get_user_state("u1", now=NOW)
    assert len(full.recent) == 2 and full.seen == {"i1", "i2"}
    got = recommender.get_sentiment("u1")
    assert got is not None and got.avg == pytest.approx(-0.5)
    assert [item for item, _ in recommender.trending(5, now=NOW)] == ["i2", "i1"]

    admin = stores("admin")
    assert admin.unsuppress("u1", "i1", now=NOW)
    assert admin.forget_user("u2", now=NOW) > 0
    assert recommender.get_serving_state("u2", now=NOW).forgotten

    trainer = stores("trainer")
    assert set(trainer.forgotten_users()) == {"u2"}
    client = make_redis(acl_urls["trainer"])  # what `recsys train --source redis` reads
    try:
        rows = dict(read_redis_weights(client, KeySchema(acl_prefix)))
    finally:
        client.close()
    assert rows == {"u1": {"i1": 2.0, "i2": 8.0}}


def test_the_recommender_user_cannot_write(stores: Callable[..., FeatureStore]) -> None:
    recommender = stores("recommender")
    with pytest.raises(StorePermissionError, match="recsys-recommender"):
        recommender.suppress("u1", "i1", 60.0, now=NOW)
    with pytest.raises(StorePermissionError, match="recsys-recommender"):
        recommender.apply_events(_events("u1"), now=NOW)
    with pytest.raises(StorePermissionError):
        recommender.forget_user("u1", now=NOW)


def test_the_sentiment_user_cannot_apply_events(stores: Callable[..., FeatureStore]) -> None:
    sentiment = stores("sentiment")
    with pytest.raises(StorePermissionError, match="recsys-sentiment"):
        sentiment.apply_events(_events("u1"), now=NOW)
    with pytest.raises(StorePermissionError, match="recsys-sentiment"):
        sentiment.begin_apply(_events("u1"), now=NOW).result()


def test_a_script_command_outside_the_grant_is_a_permission_error(
    stores: Callable[..., FeatureStore],
) -> None:
    """The trainer may load scripts (its store's check does) but run none of them."""
    with pytest.raises(StorePermissionError, match="recsys-trainer"):
        stores("trainer").update_sentiment("u1", 0.5, NOW, 60.0, now=NOW)


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_user_can_flush_configure_or_list_keys(
    acl_urls: dict[str, str], service: str
) -> None:
    client: Any = make_redis(acl_urls[service])
    try:
        for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish("anything", "x")
    finally:
        client.close()


def test_a_service_user_cannot_touch_keys_under_another_prefix(
    stores: Callable[..., FeatureStore], acl_prefix: str
) -> None:
    other = f"{acl_prefix}-other"
    with pytest.raises(StorePermissionError, match="recsys-events"):
        stores("events", other).apply_events(_events("u1"), now=NOW)
    with pytest.raises(StorePermissionError, match="recsys-recommender"):
        stores("recommender", other).get_serving_state("u1", now=NOW)
    with pytest.raises(StorePermissionError, match="recsys-sentiment"):
        stores("sentiment", other).unsuppress("u1", "i1", now=NOW)


def test_a_wrong_password_fails_the_open_without_showing_the_password(
    acl_urls: dict[str, str], acl_prefix: str
) -> None:
    url = acl_urls["events"].replace(_password("events"), "wrong-secret")
    with pytest.raises(StorePermissionError) as caught:
        open_store(url, prefix=acl_prefix)
    assert "wrong-secret" not in str(caught.value)
