"""The pipeline on a real three-master Redis Cluster: Kafka → events service → cluster → gRPC.

Scale-out of the state store rests on the key schema's hash tags: one user's keys share a
slot (so the events service's per-slot scripts and the recommender's four-key read each go
to one node), while different users spread over every node. These tests start a real
cluster (three redis-server processes, ``cluster-enabled yes``), run the real events service
with ``REDIS_CLUSTER=true`` and the real recommender reading through a cluster client, and
check both halves: users land on all three nodes, and a click changes the next answer. The
store opened with ``cluster=True`` answers as its in-memory twin, and the sentiment service's
Kafka path writes its suppressions and sentiment averages to the cluster.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import encode
from recsys.kafka_io import ensure_topics, make_consumer, make_producer
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
from recsys.store import FeatureEvent, KeySchema, open_store
from recsys.store.memory import InMemoryFeatureStore
from recsys_tools.harness.services import Service, running_loop, start_service, wait_serving
from recsys_tools.infra.endpoints import KafkaEndpoint
from recsys_tools.infra.redis_cluster import RedisCluster
from services.recommender import __main__ as recommender_main
from services.recommender.config import RecommenderSettings
from services.recommender.model import ItemMeta, Model
from services.recommender.training import TrainConfig, build_matrix, train
from services.sentiment.config import SentimentSettings

pytestmark = pytest.mark.integration

CLUSTERS, PER_CLUSTER, USERS = 3, 12, 60


def cluster_of(item: str) -> int:
    return int(item[1:]) // PER_CLUSTER


def clustered_model() -> Model:
    """Users u<n> like 8 items of cluster n % 3: a model that must keep users in their cluster."""
    rng = random.Random(4)
    users, items, weights = [], [], []
    for u in range(USERS):
        c = u % CLUSTERS
        for i in rng.sample(range(PER_CLUSTER), 8):
            users.append(f"u{u}")
            items.append(f"i{c * PER_CLUSTER + i}")
            weights.append(float(rng.choice((1, 2, 4))))
    item_ids = [f"i{n}" for n in range(CLUSTERS * PER_CLUSTER)]
    meta = {i: ItemMeta(i, genres=(f"g{cluster_of(i)}",)) for i in item_ids}
    config = TrainConfig(factors=8, iterations=10, regularization=0.05, num_threads=1)
    return train(build_matrix(users, items, weights, item_ids=item_ids), config, items=meta)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


@pytest.fixture
def cluster_client(cluster: RedisCluster) -> Iterator[Any]:
    from redis.cluster import RedisCluster as ClusterClient

    client: Any = ClusterClient.from_url(cluster.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def events_on_cluster(kafka: KafkaEndpoint, cluster: RedisCluster, topic: str, group_id: str,
                      key_prefix: str, tmp_path: Path) -> Iterator[Service]:  # fmt: skip
    ensure_topics(kafka.bootstrap, {topic: 3, f"{topic}.dlq": 1})
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "REDIS_URL": cluster.url,
        "REDIS_CLUSTER": "true",
        "EVENTS_TOPIC": topic,
        "EVENTS_DLQ_TOPIC": f"{topic}.dlq",
        "EVENTS_GROUP_ID": group_id,
        "REDIS_KEY_PREFIX": key_prefix,
        "EVENTS_CREATE_TOPICS": "false",
        "EVENTS_POLL_TIMEOUT_MS": "100",
        **{f"KAFKA_{k.upper()}": str(v) for k, v in kafka.consumer_overrides.items()},
    }
    service = start_service("events", ["services.events"], env, tmp_path)
    try:
        wait_serving(service, timeout_s=60)
        yield service
    finally:
        service.stop()


@pytest.fixture
def recommender_on_cluster(cluster: RedisCluster, key_prefix: str,
                           tmp_path: Path) -> Iterator[Any]:  # fmt: skip
    """The real recommender worker, configured with REDIS_CLUSTER, reading a cluster."""
    store = tmp_path / "models"
    clustered_model().save(store)
    settings = replace(RecommenderSettings(), model_dir=str(store), redis_url=cluster.url,
                       redis_cluster=True,
                       key_prefix=key_prefix, host="127.0.0.1", grpc_port=0, metrics_port=0,
                       http_port=0,
                       workers=1, redis_timeout_s=1.0, startup_timeout_s=30.0,
                       reload_interval_s=0.0, grace_s=1.0)  # fmt: skip
    running = recommender_main.start(settings)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield pb_grpc.RecommenderServiceStub(channel)
    finally:
        channel.close()
        recommender_main.stop_running(running, 0.5)


class Clicks:
    """Click events for one topic, produced with the services' codec."""

    def __init__(self, kafka: KafkaEndpoint, topic: str) -> None:
        self.topic = topic
        self.producer = make_producer(kafka.bootstrap, linger_ms=0)

    def send(self, user: str, item: str, n: int) -> None:
        ev = events_pb2.ClickEvent(event_id=f"{self.topic}-{n}", user_id=user, item_id=item,
                                   event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
        ev.event_time.FromNanoseconds(time.time_ns())
        value, headers = encode(ev)
        self.producer.send(self.topic, key=user.encode(), value=value, headers=list(headers))

    def flush(self) -> None:
        self.producer.flush(10)

    def close(self) -> None:
        self.producer.close(timeout=5)


def test_cluster_starts_with_three_masters_owning_all_slots(
    cluster: RedisCluster, cluster_client: Any
) -> None:
    nodes = cluster_client.get_primaries()
    assert sorted(n.port for n in nodes) == sorted(cluster.ports)
    info = cluster_client.cluster_info()
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == 16384


def test_events_service_spreads_users_over_every_node_and_keeps_each_user_on_one(
    kafka: KafkaEndpoint, topic: str, key_prefix: str, cluster_client: Any,
    events_on_cluster: Service,
) -> None:  # fmt: skip
    """Slot-grouped writes: all of a user's keys on one node, users on all three nodes."""
    keys = KeySchema(key_prefix)
    clicks = Clicks(kafka, topic)
    users = [f"spread-{n}" for n in range(40)]
    try:
        for n, user in enumerate(users):
            clicks.send(user, f"i{n % 36}", n)
            clicks.send(user, f"i{(n + 1) % 36}", 1000 + n)
        clicks.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(cluster_client.exists(keys.weights(u)) for u in users):
                break
            time.sleep(0.1)
    finally:
        clicks.close()
    assert all(len(cluster_client.hgetall(keys.weights(u))) == 2 for u in users)
    ports = set()
    for user in users:
        owners = {cluster_client.get_node_from_key(k).port
                  for k in (keys.weights(user), keys.seen(user), keys.recent(user))}  # fmt: skip
        assert len(owners) == 1, f"{user}'s keys are on several nodes: {owners}"
        ports |= owners
    assert len(ports) == 3, f"users landed on {len(ports)} of 3 nodes"
    counters = cluster_client.hgetall(keys.counters())
    assert sum(int(v) for v in counters.values()) >= 2 * len(users)


def test_a_click_through_kafka_changes_the_recommendation_read_from_the_cluster(
    kafka: KafkaEndpoint, topic: str, events_on_cluster: Service, recommender_on_cluster: Any,
) -> None:  # fmt: skip
    stub = recommender_on_cluster

    def top(user: str) -> list[pb.ScoredItem]:
        return list(stub.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=5).items)

    clicks = Clicks(kafka, topic)
    try:
        before = [i.item_id for i in top("u0")]
        target = before[0]
        clicks.send("u0", target, 0)
        clicks.flush()
        deadline = time.monotonic() + 60
        after = before
        while target in after and time.monotonic() < deadline:
            time.sleep(0.05)
            after = [i.item_id for i in top("u0")]
        assert target not in after
        assert after != before
        # a brand-new user: three clicks in cluster 1 give cluster-1 items, folded in live
        for n, item in enumerate(("i12", "i13", "i14"), start=1):
            clicks.send("fresh-user", item, n)
        clicks.flush()
        deadline = time.monotonic() + 30
        fresh = top("fresh-user")
        while (not fresh or fresh[0].reason != pb.REASON_COLLABORATIVE
               or {"i12", "i13", "i14"} & {i.item_id for i in fresh}) and (
                   time.monotonic() < deadline):  # fmt: skip
            time.sleep(0.05)
            fresh = top("fresh-user")
        ids = [i.item_id for i in fresh]
        assert ids and all(cluster_of(i) == 1 for i in ids), ids
    finally:
        clicks.close()


# ---------------------------------------------------------------------- the store itself
def test_the_store_opened_with_cluster_reads_and_writes_as_the_memory_store(
    cluster: RedisCluster, cluster_client: Any, key_prefix: str
) -> None:
    """open_store(cluster=True): the same answers as the in-memory twin, users on every
    node, and the recommender's serving read still one round trip per request."""
    now = time.time()
    users = [f"store-{n}" for n in range(24)]
    events = [FeatureEvent(f"e{n}", users[n % len(users)], f"i{n % 7}", "click", 1.0 + n % 3,
                           now) for n in range(96)]  # fmt: skip
    store = open_store(cluster.url, prefix=key_prefix, cluster=True, timeout_s=2.0)
    twin = InMemoryFeatureStore()
    try:
        assert store.ping() is True
        for backend in (store, twin):
            assert backend.apply_events(events, now=now).user_applied == len(events)
            backend.suppress(users[0], "i1", 60, now=now)
            backend.update_sentiment(users[1], -0.5, now, 3600, feedback_id="f1", now=now)
            backend.suppress(users[2], "i2", 60, now=now)
            assert backend.unsuppress(users[2], "i2", now=now) is True
            backend.forget_user(users[3], now=now)  # keys in its slot, ids out of the {g} slot
            backend.forget_user(users[4], now=now)
        assert store.forgotten_users() == twin.forgotten_users() == {users[3]: now,
                                                                      users[4]: now}  # fmt: skip
        replay = [e for e in events if e.user_id in users[3:5]]
        assert store.apply_events(replay, now=now) == twin.apply_events(replay, now=now)
        for user in users:
            assert store.get_user_state(user, now=now) == twin.get_user_state(user, now=now)
            before = store.round_trips  # type: ignore[attr-defined]
            assert store.get_serving_state(user, now=now) == twin.get_serving_state(user, now=now)
            assert store.round_trips - before == 1  # type: ignore[attr-defined]
        assert store.get_sentiment(users[1]) == twin.get_sentiment(users[1])
        assert store.counters() == twin.counters()
        assert dict(store.trending(7, now=now)) == pytest.approx(dict(twin.trending(7, now=now)))
        keys = KeySchema(key_prefix)
        ports = {cluster_client.get_node_from_key(keys.weights(u)).port for u in users}
        assert len(ports) == 3, f"users landed on {len(ports)} of 3 nodes"
    finally:
        store.close()


# ------------------------------------------------------------- the sentiment Kafka path
NEGATIVE_REVIEW = "terrible product, it broke after one day"
POSITIVE_REVIEW = "质量很好，非常满意"


@pytest.fixture(scope="module")
def sentiment_backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("tensorflow")
    from services.sentiment.backends import InProcessBackend
    from services.sentiment.smoke import train_smoke_model

    base = tmp_path_factory.mktemp("sentiment-model")
    train_smoke_model(base, version=5)
    return InProcessBackend(Path(base))


@pytest.fixture
def sentiment_on_cluster(
    kafka: KafkaEndpoint, cluster: RedisCluster, topic: str, group_id: str, key_prefix: str,
    sentiment_backend: Any,
) -> Iterator[tuple[SentimentSettings, Any]]:  # fmt: skip
    """The sentiment consume loop (in a thread) with REDIS_CLUSTER, writing to the cluster."""
    from services.sentiment.consumer import SentimentConsumer

    base = SentimentSettings()
    settings = replace(
        base,
        consumer=replace(base.consumer, bootstrap=kafka.bootstrap, topic=topic,
                         dlq_topic=f"{topic}.dlq", group_id=group_id, poll_timeout_ms=200),
        output_topic=f"{topic}.scored",
        redis_url=cluster.url,
        redis_cluster=True,
        key_prefix=key_prefix,
        suppress_ttl_s=3600.0,
        half_life_s=86400.0,
    )  # fmt: skip
    ensure_topics(kafka.bootstrap, {topic: 2, settings.output_topic: 1, f"{topic}.dlq": 1})
    # what services.sentiment.__main__ opens
    store = open_store(settings.redis_url, prefix=settings.key_prefix,
                       cluster=settings.redis_cluster)  # fmt: skip
    producer = make_producer(kafka.bootstrap, client_id="sentiment-cluster-test")
    consumer = make_consumer(kafka.bootstrap, group_id, **kafka.consumer_config(
        **{**settings.consumer.consumer_overrides(), "metadata_max_age_ms": 1000}))  # fmt: skip
    loop = SentimentConsumer(settings, consumer, producer, store, sentiment_backend)
    try:
        with running_loop(loop):
            yield settings, loop
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        store.close()


@pytest.mark.sentiment
def test_feedback_through_kafka_lands_suppression_and_sentiment_in_the_cluster(
    kafka: KafkaEndpoint, sentiment_on_cluster: tuple[SentimentSettings, Any],
    cluster_client: Any, key_prefix: str,
) -> None:  # fmt: skip
    """The sentiment service on Redis Cluster: a negative review of an item hides it from
    that user, and every user's decayed sentiment average is in the cluster, on their node."""
    from recsys.feedback.v1 import feedback_pb2

    settings, loop = sentiment_on_cluster
    users = [f"fb-{n}" for n in range(6)]
    records = []
    for n, user in enumerate(users):
        records.append(feedback_pb2.CustomerFeedback(
            feedback_id=f"{user}-neg", user_id=user, text=NEGATIVE_REVIEW,
            source_system="test", item_id=f"sku-{n}"))  # fmt: skip
        records.append(feedback_pb2.CustomerFeedback(
            feedback_id=f"{user}-pos", user_id=user, text=POSITIVE_REVIEW,
            source_system="test"))  # fmt: skip
    started = time.time()
    producer = make_producer(kafka.bootstrap, linger_ms=5)
    try:
        for rec in records:
            value, headers = encode(rec)
            producer.send(settings.consumer.topic, key=rec.user_id.encode(), value=value,
                          headers=list(headers))  # fmt: skip
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    deadline = time.monotonic() + 60
    while loop.scored < len(records) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert loop.scored == len(records)
    assert loop.suppressed == len(users)
    keys = KeySchema(key_prefix)
    nodes = set()
    for n, user in enumerate(users):
        suppressed = dict(cluster_client.zrange(keys.suppressed(user), 0, -1, withscores=True))
        assert suppressed.keys() == {f"sku-{n}"}
        assert started + 3600 - 5 <= suppressed[f"sku-{n}"] <= time.time() + 3600 + 5
        sentiment = {k: float(v) for k, v in cluster_client.hgetall(keys.sentiment(user)).items()}
        assert sentiment["n"] == pytest.approx(2.0, abs=0.01)
        assert -1.0 <= sentiment["avg"] <= 1.0
        owners = {cluster_client.get_node_from_key(k).port
                  for k in (keys.suppressed(user), keys.sentiment(user),
                            keys.feedback_applied(user))}  # fmt: skip
        assert len(owners) == 1, f"{user}'s keys are on several nodes: {owners}"
        nodes |= owners
    assert len(nodes) > 1, "every user landed on one node: the test shows no cluster routing"
