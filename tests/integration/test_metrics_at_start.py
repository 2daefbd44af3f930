"""Every metric a service's page documents is on its /metrics right after the start, at zero.

Regression: a labelled counter (``recsys_recommender_degraded_total``, the model reload
counter, the dead-letter and dependency counters...) had no series until its first
increment, so ``absent()`` alerts fired and dashboards showed "no data" on a healthy
service, and the first ``rate()`` after an incident was lost. Now each service creates the
series whose labels it knows at start. Each process here is started as a deployment runs
it, sent no traffic, and scraped once it reports SERVING (the events service's lag series
appear when its partitions are assigned, a moment later).

Also here: the sentiment metric's ``language`` label is bounded (a caller's tag is not a
label value of its own).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from recsys.health import HealthState
from recsys.kafka_io import ensure_topics
from recsys.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from recsys_tools.harness import (
    QUIET_ENV,
    Service,
    events_env,
    free_port,
    kafka_env,
    wait_for,
    wait_serving,
)
from recsys_tools.infra.endpoints import KafkaEndpoint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Counters that may count before the first scrape on a healthy start (a dependency that
#: answers a moment late is a retried error): present is what matters for them.
MAY_COUNT_AT_START = ("_dependency_errors_total", "_consumer_restarts_total")


def documented_metrics(service: str) -> set[str]:
    """The metric names ``docs/<service>.md`` mentions (its metrics list and its prose)."""
    text = (ROOT / "docs" / f"{service}.md").read_text()
    names = set(re.findall(rf"\brecsys_{service}_[a-z_]*[a-z]\b", text))
    assert names, f"docs/{service}.md names no metric"
    return names


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def series(samples: Sequence[Sample], name: str) -> list[Sample]:
    """The samples of metric ``name``: itself, or a histogram's buckets, count and sum."""
    wanted = {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return [s for s in samples if s.name in wanted]


def missing(names: set[str], port: int) -> list[str]:
    samples = scrape(port)
    return sorted(n for n in names if not series(samples, n))


def check_exported_at_zero(
    service: str, process: Service, port: int, exclude: frozenset[str] = frozenset()
) -> list[Sample]:
    """Wait (a little) for every metric the service's page documents (but ``exclude``) to
    have a series, then check that the counters, with no traffic sent, are all at zero;
    the samples, for more checks."""
    names = documented_metrics(service) - exclude
    wait_for(lambda: not missing(names, port), 30, "every documented metric on /metrics",
             lambda: f"missing: {missing(names, port)}\n{process.log_tail(20)}")  # fmt: skip
    samples = scrape(port)
    counted = [
        s
        for s in samples
        if s.name.startswith(f"recsys_{service}_")
        and s.name.endswith("_total")
        and not s.name.endswith(MAY_COUNT_AT_START)
        and s.value != 0
    ]
    assert not counted, counted
    return samples


def label_values(samples: Sequence[Sample], name: str, label: str) -> set[str]:
    return {s.labels[label] for s in samples if s.name == name}


def start(name: str, module_args: list[str], env: Mapping[str, str], tmp_path: Path
          ) -> tuple[Service, int]:  # fmt: skip
    metrics_port = free_port()
    service = Service(name, module_args, {**QUIET_ENV, "METRICS_PORT": str(metrics_port), **env},
                      log_path=tmp_path / f"{name}.log", port=free_port())  # fmt: skip
    service.start()
    return service, metrics_port


# ------------------------------------------------------------------------------ recommender
@pytest.mark.parametrize("workers", [1, 2])  # 2: the parent's multi-process aggregation
def test_recommender_exports_every_documented_metric_from_the_start(
    workers: int, recommender_models: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    service, port = start("recommender", ["services.recommender"], {
        "RECSYS_MODEL_DIR": str(recommender_models),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "GRPC_HOST": "127.0.0.1",
        "WORKERS": str(workers),
    }, tmp_path)  # fmt: skip
    try:
        wait_serving(service, 60)
        samples = check_exported_at_zero("recommender", service, port)
    finally:
        assert service.stop(timeout_s=30) == 0
    requests = "recsys_recommender_requests_total"
    assert label_values(samples, requests, "method") == {
        "Recommend", "SimilarItems", "Explain", "BatchRecommend"}  # fmt: skip
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "INTERNAL",
            "DEADLINE_EXCEEDED"} <= label_values(samples, requests, "code")  # fmt: skip
    assert label_values(samples, "recsys_recommender_degraded_total", "method") == {
        "Recommend", "Explain", "BatchRecommend"}  # fmt: skip
    assert label_values(samples, "recsys_recommender_model_reloads_total", "result") == {
        "ok", "failed"}  # fmt: skip
    assert label_values(samples, "recsys_recommender_results_total", "source") == {
        "foldin", "model", "trending", "popular"}  # fmt: skip


# ----------------------------------------------------------------------------------- events
def test_events_exports_every_documented_metric_from_the_start(
    kafka: KafkaEndpoint, redis_url: str, topic: str, key_prefix: str, tmp_path: Path
) -> None:
    ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}.dlq": 1})
    env = events_env(kafka, redis_url, topic, key_prefix)
    service, port = start("events", ["services.events"], env, tmp_path)
    try:
        wait_serving(service, 120)
        samples = check_exported_at_zero("events", service, port)
    finally:
        assert service.stop(timeout_s=30) == 0
    assert {"click", "view", "purchase"} <= label_values(
        samples, "recsys_events_processed_total", "type")  # fmt: skip
    assert {"decode", "unknown_type"} <= label_values(
        samples, "recsys_events_dead_lettered_total", "reason")  # fmt: skip
    assert label_values(samples, "recsys_events_dependency_errors_total", "dependency") == {
        "kafka", "redis"}  # fmt: skip
    assert label_values(samples, "recsys_events_consumer_restarts_total", "reason") == {
        "join", "no_progress"}  # fmt: skip
    assert label_values(samples, "recsys_events_consumer_lag", "partition") == {"0", "1"}


# -------------------------------------------------------------------------------- sentiment
@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from services.sentiment.smoke import train_smoke_model

    base = tmp_path_factory.mktemp("sentiment-model")
    train_smoke_model(base)
    return base


#: Only the consume loop writes these (docs/sentiment.md, "Health and metrics").
SENTIMENT_CONSUMER_ONLY = frozenset(
    {
        "recsys_sentiment_dependency_errors_total",
        "recsys_sentiment_consumer_restarts_total",
    }
)


@pytest.mark.sentiment
def test_sentiment_serve_exports_every_documented_metric_from_the_start(
    sentiment_model: Path, tmp_path: Path
) -> None:
    service, port = start("sentiment", ["services.sentiment", "serve"], {
        "SENTIMENT_BACKEND": "inprocess",
        "SENTIMENT_MODEL_DIR": str(sentiment_model),
    }, tmp_path)  # fmt: skip
    try:
        wait_serving(service, 180)
        samples = check_exported_at_zero("sentiment", service, port, SENTIMENT_CONSUMER_ONLY)
    finally:
        assert service.stop(timeout_s=30) == 0
    assert label_values(samples, "recsys_sentiment_requests_total", "method") == {
        "Classify", "ClassifyBatch"}  # fmt: skip
    assert label_values(samples, "recsys_sentiment_classified_total", "language") == {
        "en", "zh", "und", "other"}  # fmt: skip


@pytest.mark.sentiment
def test_sentiment_consume_exports_every_documented_metric_from_the_start(
    sentiment_model: Path, kafka: KafkaEndpoint, redis_url: str, topic: str, key_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    service, port = start("sentiment-consume", ["services.sentiment", "consume"], {
        **kafka_env(kafka),
        "SENTIMENT_BACKEND": "inprocess",
        "SENTIMENT_MODEL_DIR": str(sentiment_model),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "SENTIMENT_TOPIC": topic,
        "SENTIMENT_DLQ_TOPIC": f"{topic}.dlq",
        "SENTIMENT_OUTPUT_TOPIC": f"{topic}.scored",
        "SENTIMENT_GROUP_ID": f"{topic}-sentiment",
        "SENTIMENT_POLL_TIMEOUT_MS": "100",
    }, tmp_path)  # fmt: skip
    try:
        wait_serving(service, 180)
        samples = check_exported_at_zero("sentiment", service, port)
    finally:
        assert service.stop(timeout_s=30) == 0
    assert label_values(samples, "recsys_sentiment_dependency_errors_total", "dependency") == {
        "kafka", "redis", "model"}  # fmt: skip
    assert {"decode", "empty_text"} <= label_values(
        samples, "recsys_sentiment_dead_lettered_total", "reason")  # fmt: skip


# ---------------------------------------------------------------- the language label, bounded
class FixedPredictor:
    """Every text positive: the labelling is under test here, not the model."""

    model_version = "fixed"

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(np.array([0.1, 0.2, 0.7]), (len(texts), 1))


@pytest.fixture
def sentiment_stub() -> Iterator[sentiment_pb2_grpc.SentimentServiceStub]:
    import grpc

    from services.sentiment.config import SentimentSettings
    from services.sentiment.server import SERVICE_NAME, create_server

    health = HealthState([SERVICE_NAME])
    settings = SentimentSettings(grpc_workers=2, max_text_chars=400, max_batch=8)
    server, grpc_port = create_server(FixedPredictor(), settings, health, port=0,
                                      host="127.0.0.1")  # fmt: skip
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            yield sentiment_pb2_grpc.SentimentServiceStub(channel)
    finally:
        server.stop(grace=None)


def classified(language: str) -> float:
    labels = {"label": "positive", "language": language}
    return REGISTRY.get_sample_value("recsys_sentiment_classified_total", labels) or 0.0


def test_sentiment_language_label_is_bounded_whatever_tags_callers_send(
    sentiment_stub: sentiment_pb2_grpc.SentimentServiceStub,
) -> None:
    """Regression: each tag a caller sent (``fr``, ``tlh``, ``qa``...) became a
    ``language`` series of its own, an unbounded label. Now: the model's languages, ``und``,
    and ``other``; the answer still carries the caller's tag."""
    tags = [f"q{letter}" for letter in "abcdefghijklmnopqrst"] + ["fr-CA", "tlh"]
    before = {lang: classified(lang) for lang in ("other", "en", "zh")}
    for tag in tags:
        answer = sentiment_stub.Classify(
            sentiment_pb2.ClassifyRequest(text="great", language=tag), timeout=10
        )
        assert answer.language == tag.split("-")[0].lower()
    sentiment_stub.Classify(sentiment_pb2.ClassifyRequest(text="great", language="en-GB"))
    sentiment_stub.Classify(sentiment_pb2.ClassifyRequest(text="很好"))
    assert classified("other") - before["other"] == len(tags)
    assert classified("en") - before["en"] == 1
    assert classified("zh") - before["zh"] == 1
    languages = {
        s.labels["language"]
        for metric in REGISTRY.collect()
        if metric.name == "recsys_sentiment_classified"
        for s in metric.samples
    }
    assert languages == {"en", "zh", "und", "other"}
