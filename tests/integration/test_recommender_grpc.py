"""The recommender over real gRPC and a real redis-server (and Kafka + the events service for
the click-to-recommendation test).

The model is trained here, in a second, on a synthetic catalog of three clusters: a user
who clicks items of one cluster must get that cluster back, which makes "personalised"
checkable without a data set.
"""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tls_certs import HAVE_OPENSSL, make_certs

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import encode
from recsys.kafka_io import make_producer
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
from recsys.store import FeatureEvent, KeySchema
from recsys.store.redis_store import RedisFeatureStore
from recsys_tools.harness import Service, events_service, free_port, wait_for, wait_serving
from recsys_tools.infra.endpoints import KafkaEndpoint
from services.recommender.__main__ import Running, listen, make_ready, start, stop_running
from services.recommender.config import RecommenderSettings
from services.recommender.model import ItemMeta, Model
from services.recommender.training import TrainConfig, build_matrix, train

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = 3
PER_CLUSTER = 20
SERVING = health_pb2.HealthCheckResponse.SERVING


def cluster_of(item: str) -> int:
    return int(item[1:]) // PER_CLUSTER


def synthetic_model(seed: int = 1) -> Model:
    """60 items in three clusters (genres g0..g2); 90 users each clicking in one cluster."""
    rng = random.Random(seed)
    users, items, weights = [], [], []
    for u in range(90):
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
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("models")
    synthetic_model().save(store)
    return store


def settings_for(redis_url: str, prefix: str, model_dir: Path, **extra: Any) -> RecommenderSettings:
    base = RecommenderSettings(
        model_dir=str(model_dir),
        redis_url=redis_url,
        key_prefix=prefix,
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        http_port=0,
        workers=1,
        threads=8,
        max_k=50,
        redis_timeout_s=0.5,
        redis_retry_s=0.2,
        startup_timeout_s=30.0,
        reload_interval_s=0.1,
        grace_s=2.0,
    )
    return replace(base, **extra)


class Server:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = pb_grpc.RecommenderServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def recommend(self, user: str, k: int = 5, **filters: Any) -> pb.RecommendResponse:
        request = pb.RecommendRequest(user_id=user, k=k, filters=pb.Filters(**filters))
        return self.stub.Recommend(request, timeout=5)

    def ids(self, user: str, k: int = 5) -> list[str]:
        return [i.item_id for i in self.recommend(user, k).items]


@pytest.fixture
def serve(redis_url: str, key_prefix: str, model_store: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(**extra: Any) -> Server:
        settings = settings_for(
            extra.pop("redis_url", redis_url), key_prefix, extra.pop("model_dir", model_store),
            **extra,
        )  # fmt: skip
        server = Server(start(settings))
        started.append(server)
        return server

    yield make
    for server in started:
        server.channel.close()
        stop_running(server.running, 0.5)


def store_for(redis_client: Any, key_prefix: str) -> RedisFeatureStore:
    return RedisFeatureStore(redis_client, KeySchema(key_prefix))


def clicks(store: RedisFeatureStore, user: str, items: list[str], weight: float = 2.0) -> None:
    now = time.time()
    store.apply_events(
        [
            FeatureEvent(f"{user}-{item}-{n}-{now}", user, item, "click", weight, now)
            for n, item in enumerate(items)
        ]
    )


# ---------------------------------------------------------------------- health, reflection
def test_old_connections_get_goaway_and_clients_reconnect_without_failed_calls(
    serve: Callable[..., Server],
) -> None:
    server = serve(max_connection_age_s=0.5, grace_s=1.0)
    states: list[grpc.ChannelConnectivity] = []
    server.channel.subscribe(states.append, try_to_connect=True)
    try:
        deadline = time.monotonic() + 3.0
        calls = 0
        while time.monotonic() < deadline:
            assert server.ids("u0")  # never fails across the GOAWAYs
            calls += 1
            time.sleep(0.02)
    finally:
        server.channel.unsubscribe(states.append)
    # each GOAWAY sends the channel back through IDLE/CONNECTING to a fresh connection
    ready = [i for i, s in enumerate(states) if s == grpc.ChannelConnectivity.READY]
    assert len(ready) >= 3, states
    assert calls > 50


def test_health_serving_and_reflection_lists_the_service(serve: Callable[..., Server]) -> None:
    server = serve()
    check = server.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert check.status == SERVING
    named = server.health.Check(
        health_pb2.HealthCheckRequest(service="recsys.recommender.v1.RecommenderService"),
        timeout=5,
    )
    assert named.status == SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"recsys.recommender.v1.RecommenderService", "grpc.health.v1.Health"} <= names


def test_not_serving_until_a_model_is_published(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    store_dir = tmp_path / "empty-store"
    settings = settings_for(redis_url, key_prefix, store_dir)
    running = listen(settings)
    stop = threading.Event()
    thread = threading.Thread(target=make_ready, args=(settings, running, stop))
    thread.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = pb_grpc.RecommenderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(pb.RecommendRequest(user_id="u1", k=3), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        synthetic_model().save(store_dir)
        thread.join(20)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        assert stub.Recommend(pb.RecommendRequest(user_id="u1", k=3), timeout=5).items
    finally:
        stop.set()
        thread.join(20)
        channel.close()
        stop_running(running, 0.5)


# ------------------------------------------------------------------------------ behaviour
def test_brand_new_user_with_three_clicks_gets_their_cluster(
    serve: Callable[..., Server], redis_client: Any, key_prefix: str
) -> None:
    server = serve()
    cold = server.recommend("brand-new", 5)
    assert {i.reason for i in cold.items} == {pb.REASON_POPULARITY}
    store = store_for(redis_client, key_prefix)
    clicked = ["i40", "i41", "i42"]  # cluster 2
    clicks(store, "brand-new", clicked)
    warm = server.recommend("brand-new", 5)
    ids = [i.item_id for i in warm.items]
    assert not set(clicked) & set(ids)
    assert all(cluster_of(i) == 2 for i in ids), ids
    assert {i.reason for i in warm.items} == {pb.REASON_COLLABORATIVE}
    assert warm.model_version and not warm.degraded


def test_suppressed_items_disappear(
    serve: Callable[..., Server], redis_client: Any, key_prefix: str
) -> None:
    server = serve()
    before = server.ids("u0", 3)
    store_for(redis_client, key_prefix).suppress("u0", before[0], ttl_s=60)
    after = server.ids("u0", 3)
    assert before[0] not in after and after[:2] == before[1:]


def test_forget_user_makes_every_answer_anonymous_at_once(
    serve: Callable[..., Server], redis_client: Any, redis_url: str, key_prefix: str,
    capsys: Any,
) -> None:  # fmt: skip
    """Regression: `recsys forget-user` deleted the Redis keys only, so a user in the
    training data kept a personalised list and an Explain of their history. After it, the
    user gets what a never-seen visitor gets, over gRPC, with the model unchanged."""
    from recsys_tools.cli import main

    server = serve()
    store = store_for(redis_client, key_prefix)
    clicks(store, "u0", ["i5"])
    store.update_sentiment("u0", -0.5, time.time(), 86400.0)
    personal = server.recommend("u0", 5)
    assert {i.reason for i in personal.items} == {pb.REASON_COLLABORATIVE}
    top = personal.items[0].item_id
    explained = server.stub.Explain(pb.ExplainRequest(user_id="u0", item_id=top), timeout=5)
    assert explained.contributions and explained.sentiment_average == pytest.approx(-0.5)

    assert main(["forget-user", "u0", "--redis-url", redis_url, "--key-prefix", key_prefix]) == 0
    assert "recorded as forgotten" in capsys.readouterr().out
    anonymous = server.recommend("u0", 5)
    assert [i.item_id for i in anonymous.items] == server.ids("never-seen", 5)
    assert {i.reason for i in anonymous.items} <= {pb.REASON_TRENDING, pb.REASON_POPULARITY}
    gone = server.stub.Explain(pb.ExplainRequest(user_id="u0", item_id=top), timeout=5)
    assert not gone.contributions and gone.score == 0
    assert not gone.HasField("sentiment_average")
    widget = pb.WidgetRequest(widget_id="home", recommend=pb.RecommendRequest(user_id="u0", k=5))
    batch = server.stub.BatchRecommend(pb.BatchRecommendRequest(widgets=[widget]), timeout=5)
    assert [i.item_id for i in batch.widgets[0].recommend.items] == server.ids("never-seen", 5)
    assert "u0" in store.forgotten_users()


def test_unsuppress_command_shows_the_item_again(
    serve: Callable[..., Server], redis_client: Any, redis_url: str, key_prefix: str,
    capsys: Any,
) -> None:  # fmt: skip
    from recsys_tools.cli import main

    server = serve()
    before = server.ids("u1", 3)
    store_for(redis_client, key_prefix).suppress("u1", before[0], ttl_s=3600)
    assert before[0] not in server.ids("u1", 3)
    argv = ["unsuppress", "--user", "u1", "--item", before[0], "--redis-url", redis_url,
            "--key-prefix", key_prefix]  # fmt: skip
    assert main(argv) == 0
    assert "again" in capsys.readouterr().out
    assert server.ids("u1", 3) == before
    assert main(argv) == 0
    assert "no suppression" in capsys.readouterr().out


def test_trending_for_users_without_history(
    serve: Callable[..., Server], redis_client: Any, key_prefix: str
) -> None:
    server = serve(trending_cache_s=0.0)
    store = store_for(redis_client, key_prefix)
    for n in range(4):
        clicks(store, f"fan{n}", ["i7"])
    response = server.recommend("nobody", 3)
    assert response.items[0].item_id == "i7"
    assert response.items[0].reason == pb.REASON_TRENDING


def test_similar_explain_and_batch(serve: Callable[..., Server]) -> None:
    server = serve()
    similar = server.stub.SimilarItems(pb.SimilarItemsRequest(item_id="i3", k=5), timeout=5)
    assert len(similar.items) == 5 and all(cluster_of(i.item_id) == 0 for i in similar.items)
    top = server.ids("u0", 1)[0]
    explained = server.stub.Explain(pb.ExplainRequest(user_id="u0", item_id=top), timeout=5)
    assert explained.contributions and explained.score > 0
    assert all(cluster_of(c.item_id) == 0 for c in explained.contributions[:3])
    batch = server.stub.BatchRecommend(
        pb.BatchRecommendRequest(
            widgets=[
                pb.WidgetRequest(
                    widget_id="home", recommend=pb.RecommendRequest(user_id="u1", k=3)
                ),
                pb.WidgetRequest(widget_id="bad", recommend=pb.RecommendRequest(user_id="u1", k=0)),
                pb.WidgetRequest(
                    widget_id="like", similar_items=pb.SimilarItemsRequest(item_id="i50", k=2)
                ),
            ]
        ),
        timeout=5,
    )
    home, bad, like = batch.widgets
    assert home.widget_id == "home" and len(home.recommend.items) == 3
    assert bad.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "k" in bad.error_message
    assert len(like.similar_items.items) == 2


# ------------------------------------------------------------------------------ bad input
BAD_REQUESTS: list[tuple[str, str, Any, grpc.StatusCode]] = [
    (
        "empty user",
        "Recommend",
        pb.RecommendRequest(user_id="", k=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "long user",
        "Recommend",
        pb.RecommendRequest(user_id="u" * 129, k=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "k zero",
        "Recommend",
        pb.RecommendRequest(user_id="u1", k=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "k negative",
        "Recommend",
        pb.RecommendRequest(user_id="u1", k=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "k over max",
        "Recommend",
        pb.RecommendRequest(user_id="u1", k=51),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "empty exclude id",
        "Recommend",
        pb.RecommendRequest(user_id="u1", k=5, filters=pb.Filters(exclude_item_ids=[""])),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "unknown category",
        "Recommend",
        pb.RecommendRequest(user_id="u1", k=5, filters=pb.Filters(categories=["nope"])),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "unknown item",
        "SimilarItems",
        pb.SimilarItemsRequest(item_id="zzz", k=5),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "empty item",
        "SimilarItems",
        pb.SimilarItemsRequest(item_id="", k=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "similar k zero",
        "SimilarItems",
        pb.SimilarItemsRequest(item_id="i1", k=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "explain unknown item",
        "Explain",
        pb.ExplainRequest(user_id="u1", item_id="zzz"),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "explain empty user",
        "Explain",
        pb.ExplainRequest(user_id="", item_id="i1"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "batch too big",
        "BatchRecommend",
        pb.BatchRecommendRequest(widgets=[pb.WidgetRequest(widget_id=str(n)) for n in range(17)]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "batch widget id of a megabyte",
        "BatchRecommend",
        pb.BatchRecommendRequest(
            widgets=[
                pb.WidgetRequest(
                    widget_id="w" * 1_000_000, recommend=pb.RecommendRequest(user_id="u1", k=3)
                )
            ]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
]


def test_every_bad_input_gets_its_status_code_and_a_message(serve: Callable[..., Server]) -> None:
    server = serve()
    for name, method, request, code in BAD_REQUESTS:
        with pytest.raises(grpc.RpcError) as err:
            getattr(server.stub, method)(request, timeout=5)
        assert err.value.code() == code, name
        assert err.value.details(), name


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return f"u{rng.randrange(120)}"
    if kind < 0.5:
        return f"i{rng.randrange(70)}"
    if kind < 0.6:
        return ""
    alphabet = string.printable + "ąż🙂\u200b\x00\x7f{}:*"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice((1, 5, 64, 129, 300))))


def random_filters(rng: random.Random) -> pb.Filters:
    return pb.Filters(
        exclude_item_ids=[random_text(rng) for _ in range(rng.choice((0, 0, 1, 3)))],
        include_seen=rng.random() < 0.3,
        categories=rng.choice(([], [], ["g1"], ["G2", "g0"], [random_text(rng)])),
    )


def test_fuzzed_requests_cause_no_internal_error(serve: Callable[..., Server]) -> None:
    server = serve()
    rng = random.Random(1234)
    codes: dict[str, int] = {}
    for _ in range(600):
        method = rng.choice(("Recommend", "SimilarItems", "Explain", "BatchRecommend"))
        k = rng.choice((-(2**31), -1, 0, 1, 5, 50, 51, 2**31 - 1))
        if method == "Recommend":
            request: Any = pb.RecommendRequest(
                user_id=random_text(rng), k=k, filters=random_filters(rng)
            )
        elif method == "SimilarItems":
            request = pb.SimilarItemsRequest(
                item_id=random_text(rng), k=k, filters=random_filters(rng)
            )
        elif method == "Explain":
            request = pb.ExplainRequest(user_id=random_text(rng), item_id=random_text(rng), k=k)
        else:
            request = pb.BatchRecommendRequest(
                widgets=[
                    pb.WidgetRequest(
                        widget_id=random_text(rng),
                        recommend=pb.RecommendRequest(user_id=random_text(rng), k=k),
                    )
                    for _ in range(rng.choice((0, 1, 4)))
                ]
            )
        try:
            getattr(server.stub, method)(request, timeout=5)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        codes[code.name] = codes.get(code.name, 0) + 1
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.NOT_FOUND), (method, request)  # fmt: skip
    assert codes.get("OK", 0) > 50 and codes.get("INVALID_ARGUMENT", 0) > 50
    assert server.health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING


# ------------------------------------------------------------------------- degraded mode
def test_redis_outage_answers_from_the_model_marked_degraded(
    serve: Callable[..., Server], redis_server_factory: Callable[..., Any], key_prefix: str
) -> None:
    redis = redis_server_factory(appendonly=False)
    server = serve(redis_url=redis.url)
    assert not server.recommend("u0", 3).degraded
    redis.stop()
    started = time.perf_counter()
    outage = [server.recommend("u0", 3) for _ in range(20)]
    elapsed = time.perf_counter() - started
    assert all(r.degraded and len(r.items) == 3 for r in outage)
    assert elapsed < 3.0  # the breaker: not 20 connect timeouts
    newcomer = server.recommend("nobody", 3)
    assert newcomer.degraded and {i.reason for i in newcomer.items} == {pb.REASON_POPULARITY}
    redis.start()
    deadline = time.monotonic() + 10
    while server.recommend("u0", 3).degraded and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.recommend("u0", 3).degraded


# ---------------------------------------------------------------------------- hot reload
def test_model_swap_under_continuous_load_fails_no_request(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    first = synthetic_model(seed=1)
    first.save(store_dir)
    server = serve(model_dir=store_dir, reload_interval_s=0.05)
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()
    count = [0]

    def load() -> None:
        rng = random.Random()
        while not stop.is_set():
            try:
                r = server.recommend(f"u{rng.randrange(90)}", 10)
                versions.add(r.model_version)
                if len(r.items) != 10:
                    failures.append(f"short answer {len(r.items)}")
                count[0] += 1
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()} {exc.details()}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    published = [first.version]
    try:
        for seed in (2, 3, 4):
            time.sleep(0.4)
            published.append(synthetic_model(seed=seed).save(store_dir))
        deadline = time.monotonic() + 10
        while published[-1] not in versions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures[:5]
    assert count[0] > 50
    assert published[-1] in versions and first.version in versions
    assert versions <= set(published)


# ----------------------------------------------------------------------- click via Kafka
def test_a_click_produced_to_kafka_changes_the_next_recommendation(
    serve: Callable[..., Server], kafka: KafkaEndpoint, redis_url: str, topic: str,
    key_prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    # the same events-service process the benchmarks run (SIGTERM, then SIGKILL, on exit)
    log_path = tmp_path / f"events-{topic}.log"
    with events_service(kafka, redis_url, topic, key_prefix, tmp_path) as events:
        click_changes_recommendations(serve, kafka, topic, events, log_path)


def click_changes_recommendations(serve: Callable[..., Server], kafka: KafkaEndpoint,
                                  topic: str, events: Service,
                                  log_path: Path) -> None:  # fmt: skip
    producer = make_producer(kafka.bootstrap, linger_ms=0)
    try:
        server = serve()
        before = server.ids("u0", 5)
        target = before[0]

        def send(user: str, item: str, n: int) -> None:
            ev = events_pb2.ClickEvent(event_id=f"{topic}-{n}", user_id=user, item_id=item,
                                       event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
            ev.event_time.FromNanoseconds(time.time_ns())
            value, headers = encode(ev)
            producer.send(topic, key=user.encode(), value=value, headers=list(headers))
            producer.flush(10)

        send("u0", target, 0)
        deadline = time.monotonic() + 60
        after = server.ids("u0", 5)
        while target in after and time.monotonic() < deadline and events.running():
            time.sleep(0.05)
            after = server.ids("u0", 5)
        assert target not in after, log_path.read_text()[-3000:]
        assert after != before
        # a brand-new user: three clicks in cluster 1 → cluster-1 recommendations, no retraining
        for n, item in enumerate(("i20", "i21", "i22"), start=1):
            send("fresh-user", item, n)
        deadline = time.monotonic() + 30
        fresh = server.recommend("fresh-user", 5)
        while (fresh.items[0].reason != pb.REASON_COLLABORATIVE
               or {"i20", "i21", "i22"} & {i.item_id for i in fresh.items}) and (
                   time.monotonic() < deadline):  # fmt: skip
            time.sleep(0.05)
            fresh = server.recommend("fresh-user", 5)
        ids = [i.item_id for i in fresh.items]
        assert all(cluster_of(i) == 1 for i in ids), ids
        assert not {"i20", "i21", "i22"} & set(ids)
    finally:
        producer.close(timeout=5)


# ------------------------------------------------------------- the process: workers, SIGTERM
def test_process_with_two_workers_serves_and_drains_on_sigterm(
    redis_url: str, key_prefix: str, model_store: Path, tmp_path: Path
) -> None:
    port = free_port()
    proc = Service("recommender", ["services.recommender"], {
        "RECSYS_MODEL_DIR": str(model_store),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "GRPC_HOST": "127.0.0.1",
        "WORKERS": "2",
        "GRACE_S": "5",
    }, log_path=tmp_path / "recommender.log", port=port)  # fmt: skip
    proc.start()
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}",
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(8)]  # fmt: skip
    try:
        wait_serving(proc, 60)
        # health answers once one worker serves: wait for the second one too, else a
        # SIGTERM that comes first stops it before it ever logs "serving"
        wait_for(
            lambda: proc.log_text().count('"recommender serving"') == 2,
            60,
            "both workers serving",
            lambda: proc.log_tail(40),
        )
        # several connections: SO_REUSEPORT spreads them over both workers
        for ch in channels:
            stub = pb_grpc.RecommenderServiceStub(ch)
            assert stub.Recommend(pb.RecommendRequest(user_id="u3", k=3), timeout=5,
                                  wait_for_ready=True).items  # fmt: skip
        assert proc.stop(timeout_s=30) == 0, proc.log_tail(40)
    finally:
        for ch in channels:
            ch.close()
        proc.stop(timeout_s=5)
    text = proc.log_text()
    assert text.count('"recommender serving"') == 2, text[-3000:]
    assert text.count('"recommender stopped"') == 2, text[-3000:]


# ---------------------------------------------------------------------------------- TLS
@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl CLI")
def test_mutual_tls_requires_a_client_certificate(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    from services.recommender.config import TlsSettings

    certs = make_certs(tmp_path)
    tls = TlsSettings(str(certs["server.pem"]), str(certs["server.key"]), str(certs["ca.pem"]))
    server = serve(tls=tls)
    port = server.running.port
    ca = certs["ca.pem"].read_bytes()
    good = grpc.secure_channel(
        f"localhost:{port}",
        grpc.ssl_channel_credentials(
            ca, certs["client.key"].read_bytes(), certs["client.pem"].read_bytes()
        ),
    )
    anonymous = grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(ca))
    plaintext = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        ok = pb_grpc.RecommenderServiceStub(good).Recommend(
            pb.RecommendRequest(user_id="u1", k=2), timeout=5
        )
        assert len(ok.items) == 2
        for channel in (anonymous, plaintext):
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.RecommenderServiceStub(channel).Recommend(
                    pb.RecommendRequest(user_id="u1", k=2), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        for channel in (good, anonymous, plaintext):
            channel.close()


def test_scores_are_finite_and_sorted(serve: Callable[..., Server]) -> None:
    server = serve()
    scores = [i.score for i in server.recommend("u5", 20).items]
    assert np.all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
