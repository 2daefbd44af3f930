"""All three services on one host on their default ports, and what a taken port does.

Regression for the README's everyday commands on one machine: every service defaulted to
gRPC 50051 and metrics 9100, so the second one died with an ``Address already in use``
traceback or, with only the metrics port changed, joined 50051 through ``SO_REUSEPORT``
and answered a share of the calls meant for another service. Now each has its own
defaults, and a port that another process holds stops the start with one line naming
the variable to change (exit 2), whether that process set ``SO_REUSEPORT`` or not.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsys.errors import ConfigError
from recsys.health import HealthState, add_health_and_reflection
from recsys.kafka_io import ensure_topics
from recsys.ports import ensure_port_free, port_in_use
from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from recsys_tools import cli
from recsys_tools.harness import QUIET_ENV, Service, events_env, wait_for, wait_serving
from recsys_tools.infra.endpoints import KafkaEndpoint
from services.events.config import load_settings as events_settings
from services.recommender.config import load_settings as recommender_settings
from services.recommender.training import TrainConfig, build_matrix, train
from services.sentiment.config import load_settings as sentiment_settings

pytestmark = pytest.mark.integration

RECOMMENDER = "recsys.recommender.v1.RecommenderService"
SENTIMENT = "recsys.sentiment.v1.SentimentService"
#: What every service's reflection lists besides its own API.
STANDARD = {health.SERVICE_NAME, "grpc.reflection.v1alpha.ServerReflection"}
#: The services' own defaults, read from their settings with an empty environment.
DEFAULTS = {
    name: (s.grpc_port, s.metrics_port)
    for name, s in (
        ("recommender", recommender_settings({})),
        ("sentiment", sentiment_settings({})),
        ("events", events_settings({})),
    )
}
#: Where the defaults must come from: the environment must not name a port.
UNSET = ("GRPC_PORT", "METRICS_PORT")


def listed_services(target: str) -> set[str]:
    """The service names reflection lists at ``target``, over a connection of its own."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a new TCP connection per channel
    with grpc.insecure_channel(target, options=options) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    return {s.name for s in response.list_services_response.service}


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def publish_recommender_model(store: Path) -> None:
    """Two groups of five items, each user clicking one group: enough for Recommend."""
    users, items = [], []
    for u in range(20):
        for i in range(5):
            users.append(f"u{u}")
            items.append(f"i{(u % 2) * 5 + i}")
    config = TrainConfig(factors=4, iterations=5, num_threads=1)
    train(build_matrix(users, items, [1.0] * len(users)), config).save(store)


@pytest.mark.sentiment
def test_three_services_on_one_host_with_default_ports_each_answer_as_themselves(
    kafka: KafkaEndpoint,
    redis_url: str,
    topic: str,
    key_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, ports in DEFAULTS.items():
        for port in ports:
            try:
                ensure_port_free("0.0.0.0", port, "port")
            except ConfigError:
                pytest.skip(f"{name}'s default port {port} is in use on this machine")
    pytest.importorskip("tensorflow")
    from services.sentiment.smoke import train_smoke_model

    model_store = tmp_path / "models"
    publish_recommender_model(model_store)
    sentiment_dir = tmp_path / "sentiment"
    train_smoke_model(sentiment_dir)
    ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}.dlq": 1})

    def service(name: str, module_args: list[str], env: Mapping[str, str]) -> Service:
        return Service(name, module_args, {**QUIET_ENV, **env}, log_path=tmp_path / f"{name}.log",
                       port=DEFAULTS[name][0], unset=UNSET)  # fmt: skip

    services = [
        service("events", ["services.events"], events_env(kafka, redis_url, topic, key_prefix)),
        service("recommender", ["services.recommender"], {
            "RECSYS_MODEL_DIR": str(model_store),
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": key_prefix,
            "WORKERS": "1",
        }),
        service("sentiment", ["services.sentiment", "serve"], {
            "SENTIMENT_BACKEND": "inprocess",
            "SENTIMENT_MODEL_DIR": str(sentiment_dir),
        }),
    ]  # fmt: skip
    try:
        for svc in services:
            svc.start()
        for svc in services:
            wait_serving(svc, 180)
        events, recommender, sentiment = services

        # Each port is its own service on every connection: a server that had joined
        # another's port through SO_REUSEPORT would answer some of them.
        for _ in range(4):
            assert listed_services(recommender.target) == {RECOMMENDER, *STANDARD}
            assert listed_services(sentiment.target) == {SENTIMENT, *STANDARD}
            assert listed_services(events.target) == STANDARD

        with grpc.insecure_channel(recommender.target) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            reply = stub.Recommend(recommender_pb2.RecommendRequest(user_id="u0", k=3), timeout=5)
            assert len(reply.items) == 3 and reply.model_version
        with grpc.insecure_channel(sentiment.target) as channel:
            classify = sentiment_pb2_grpc.SentimentServiceStub(channel).Classify
            verdict = classify(sentiment_pb2.ClassifyRequest(text="arrived broken"), timeout=10)
            assert verdict.model_version and set(verdict.probabilities) == {
                "negative", "neutral", "positive"
            }  # fmt: skip
        with grpc.insecure_channel(events.target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            assert check(health_pb2.HealthCheckRequest(), timeout=5).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            with pytest.raises(grpc.RpcError) as info:  # the events service has no such API
                check(health_pb2.HealthCheckRequest(service=RECOMMENDER), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # each metrics port is that service's exporter
        assert "recsys_recommender_requests_total" in metrics_text(DEFAULTS["recommender"][1])
        assert "recsys_sentiment_requests_total" in metrics_text(DEFAULTS["sentiment"][1])
        assert "recsys_events_duplicates_total" in metrics_text(DEFAULTS["events"][1])

        # the example client reaches both APIs without --target
        capsys.readouterr()
        assert cli.main(["client", "recommend", "--user", "u1", "-k", "2"]) == 0
        assert cli.main(["client", "classify", "--text", "arrived broken"]) == 0
        out = capsys.readouterr()
        assert out.out.count("modelVersion") == 2, out.err

        for svc in services:
            assert svc.stop(timeout_s=30) == 0, svc.log_tail(40)
    finally:
        for svc in services:
            svc.stop(timeout_s=5)


@pytest.fixture
def grpc_holder() -> Iterator[int]:
    """A gRPC server of another process' kind on 0.0.0.0: Python's default options, so
    ``SO_REUSEPORT`` on, which is what a second server used to join silently."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    state = HealthState()
    state.set_serving(True)
    add_health_and_reflection(server, state, [])
    port = server.add_insecure_port("0.0.0.0:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


@pytest.fixture
def plain_holder() -> Iterator[int]:
    """A plain listening socket on 0.0.0.0 (another program's HTTP port, say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


RECOMMENDER_ENV = {"RECSYS_MODEL_DIR": "/nonexistent", "REDIS_URL": "redis://127.0.0.1:1/0"}
SERVICES = {
    "events": (["services.events"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}),
    "sentiment": (["services.sentiment", "serve"], {}),
    "sentiment-consume": (["services.sentiment", "consume"], {}),
    "recommender": (["services.recommender"], {**RECOMMENDER_ENV, "WORKERS": "1"}),
    "recommender-2-workers": (["services.recommender"], {**RECOMMENDER_ENV, "WORKERS": "2"}),
}


@pytest.mark.parametrize("variable", ["GRPC_PORT", "METRICS_PORT"])
@pytest.mark.parametrize("name", list(SERVICES))
def test_a_service_started_on_a_taken_port_exits_2_with_one_line_naming_the_variable(
    name: str, variable: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    holder = "grpc_holder" if variable == "GRPC_PORT" else "plain_holder"
    held = int(request.getfixturevalue(holder))
    module_args, env = SERVICES[name]
    svc = Service(name, module_args, {**QUIET_ENV, **env, variable: str(held)},
                  log_path=tmp_path / f"{name}.log")  # fmt: skip
    svc.start()
    try:
        wait_for(lambda: not svc.running(), 60, f"{name} to exit", svc.log_text)
    finally:
        svc.stop(timeout_s=5)
    lines = [line for line in svc.log_text().splitlines() if line and not line.startswith("====")]
    assert svc.returncode() == 2, "\n".join(lines)
    assert len(lines) == 1, "\n".join(lines)  # no traceback, no gRPC core log
    assert str(port_in_use(variable, held)) in lines[0]
