"""SIGTERM with a ``grpc.health.v1.Health/Watch`` stream open, for every service process.

Regression: the stock health servicer keeps a Watch open until its client leaves, and
``server.stop(grace)`` waits for open calls, so one watcher (a client-side health check, a
dashboard) made every drain last the whole grace period; on the recommender's
``grpc.aio`` server the Watch also held a pool thread that outlived the server, so the
process never exited and SIGTERM ended in SIGKILL (30-32 s with the harness' 30 s wait,
past Kubernetes' default 30 s grace). Now shutdown tells the watcher NOT_SERVING, ends
its stream, and the process exits 0 within ``GRACE_S`` + 2 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.kafka_io import ensure_topics
from recsys_tools.harness import (
    QUIET_ENV,
    Service,
    events_env,
    free_port,
    wait_for,
    wait_serving,
)
from recsys_tools.infra.endpoints import KafkaEndpoint

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRACE_S = 5.0
#: What the issue asks: the drain within the grace period, plus the process' own teardown.
BOUND_S = GRACE_S + 2.0


class Watcher:
    """One Watch stream of the overall health, read on a thread of its own."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        stub = health_pb2_grpc.HealthStub(self.channel)
        self.stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        self.statuses: list[int] = []
        self.error: grpc.StatusCode | None = None  # None: the stream ended with OK
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self.stream:
                self.statuses.append(response.status)
        except grpc.RpcError as exc:
            self.error = exc.code()
        finally:
            self.ended.set()

    def close(self) -> None:
        self.stream.cancel()
        self.channel.close()


@pytest.fixture
def watcher() -> Iterator[list[Watcher]]:
    opened: list[Watcher] = []
    yield opened
    for w in opened:
        w.close()


def wait_serving_watched(watch: Watcher, service: Service) -> None:
    wait_for(lambda: watch.statuses[-1:] == [SERVING], 30, "the Watch stream to say SERVING",
             service.log_text)  # fmt: skip


def sigterm_with_watch(service: Service, opened: list[Watcher]) -> None:
    """Watch the running ``service`` until SERVING, SIGTERM it, and check the exit and what
    the watcher saw."""
    watch = Watcher(service.target)
    opened.append(watch)
    wait_serving_watched(watch, service)
    started = time.monotonic()
    code = service.stop(timeout_s=BOUND_S)  # then SIGKILL: None
    elapsed = time.monotonic() - started
    assert code == 0, f"exit {code} after {elapsed:.1f} s; log:\n{service.log_tail(30)}"
    assert elapsed <= BOUND_S, elapsed
    assert watch.ended.wait(5), "the Watch stream outlived the process"
    assert watch.statuses[-1] == NOT_SERVING, watch.statuses
    assert watch.error is None, f"the stream was cut off ({watch.error}), not ended"


def start(name: str, module_args: list[str], env: Mapping[str, str], tmp_path: Path) -> Service:
    service = Service(name, module_args, {**QUIET_ENV, "GRACE_S": str(GRACE_S), **env},
                      log_path=tmp_path / f"{name}.log", port=free_port())  # fmt: skip
    service.start()
    return service


# ------------------------------------------------------------------------------ recommender
@pytest.mark.parametrize("workers", [1, 2])
def test_recommender_exits_within_grace_on_sigterm_with_an_open_health_watch(
    workers: int, recommender_models: Path, redis_url: str, key_prefix: str, tmp_path: Path,
    watcher: list[Watcher],
) -> None:  # fmt: skip
    service = start("recommender", ["services.recommender"], {
        "RECSYS_MODEL_DIR": str(recommender_models),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "GRPC_HOST": "127.0.0.1",
        "WORKERS": str(workers),
        "LOG_LEVEL": "info",  # the "recommender serving" line of each worker
    }, tmp_path)  # fmt: skip
    try:
        wait_serving(service, 60)
        wait_for(lambda: service.log_count('"recommender serving"') == workers, 60,
                 "every worker serving", service.log_text)  # fmt: skip
        sigterm_with_watch(service, watcher)
    finally:
        service.stop(timeout_s=5)


def test_recommender_health_checks_answer_with_more_watches_than_grpc_threads(
    recommender_models: Path, redis_url: str, key_prefix: str, tmp_path: Path,
    watcher: list[Watcher],
) -> None:  # fmt: skip
    """Regression, the same cause: on ``grpc.aio`` each Watch held a ``GRPC_THREADS`` pool
    thread until its stream ended, even once its client had cancelled it, and health
    checks queue for that pool: a few watchers (client-side health checking opens one per
    channel) and the probes hung. The Watch now runs on the event loop."""
    service = start("recommender", ["services.recommender"], {
        "RECSYS_MODEL_DIR": str(recommender_models),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "GRPC_HOST": "127.0.0.1",
        "WORKERS": "1",
        "GRPC_THREADS": "2",
    }, tmp_path)  # fmt: skip
    try:
        wait_serving(service, 60)
        for n in range(6):  # three left open, three cancelled: each held a thread for good
            watch = Watcher(service.target)
            wait_serving_watched(watch, service)
            if n % 2:
                watch.close()
            else:
                watcher.append(watch)
        with grpc.insecure_channel(service.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            check = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert check.status == SERVING
        sigterm_with_watch(service, watcher)
    finally:
        service.stop(timeout_s=5)


# -------------------------------------------------------------------------------- sentiment
@pytest.mark.sentiment
def test_sentiment_exits_within_grace_on_sigterm_with_an_open_health_watch(
    tmp_path: Path, watcher: list[Watcher]
) -> None:
    pytest.importorskip("tensorflow")
    from services.sentiment.smoke import train_smoke_model

    train_smoke_model(tmp_path / "sentiment")
    service = start("sentiment", ["services.sentiment", "serve"], {
        "SENTIMENT_BACKEND": "inprocess",
        "SENTIMENT_MODEL_DIR": str(tmp_path / "sentiment"),
    }, tmp_path)  # fmt: skip
    try:
        wait_serving(service, 180)
        sigterm_with_watch(service, watcher)
    finally:
        service.stop(timeout_s=5)


# ----------------------------------------------------------------------------------- events
def test_events_exits_promptly_on_sigterm_with_an_open_health_watch(
    kafka: KafkaEndpoint, redis_url: str, topic: str, key_prefix: str, tmp_path: Path,
    watcher: list[Watcher],
) -> None:  # fmt: skip
    """The consumers' health-only server (the events service's, also the sentiment
    consumer's): it drains for 2 s, and the stream must not make it wait them out."""
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    env = events_env(kafka, redis_url, topic, key_prefix)
    service = start("events", ["services.events"], env, tmp_path)
    try:
        wait_serving(service, 120)
        sigterm_with_watch(service, watcher)
    finally:
        service.stop(timeout_s=5)
