"""Request bodies that do not parse, on every RPC of both gRPC servers, over real gRPC.

Regression: grpc's generated handlers parse the body with ``Message.FromString`` before the
servicer runs, so invalid UTF-8 in a string field or a corrupt body was answered UNKNOWN
with a Python exception class in the message (the recommender, ``grpc.aio``) or INTERNAL
(the sentiment service, threaded server), logged one ERROR traceback per call, and was
missing from the request metrics. Now: INVALID_ARGUMENT naming the expected message, counted
with its code, one WARNING per method however many arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from recsys.grpc_requests import LogThrottle
from recsys.health import HealthState
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.sentiment.v1 import sentiment_pb2
from recsys_tools.harness import wait_for
from services.recommender import server as recommender_server
from services.recommender.__main__ import Running, start, stop_running
from services.recommender.config import RecommenderSettings
from services.recommender.training import TrainConfig, build_matrix, train
from services.sentiment import server as sentiment_server
from services.sentiment.config import SentimentSettings

pytestmark = pytest.mark.integration

#: How many bad bodies each method gets: enough that a log line per call would show.
FLOOD = 20
CORRUPT = b"\xff\xff\xff"  # not protobuf: field 0 / an unterminated varint


def with_invalid_utf8(message: Message) -> bytes:
    """``message`` serialised, its one string "PLACEHOLDER" ending in a byte that is never
    UTF-8 (same length, so the framing stays valid: only the string is wrong)."""
    body = message.SerializeToString()
    assert body.count(b"PLACEHOLDER") == 1
    return body.replace(b"PLACEHOLDER", b"PLACEHOLDE\xff")


RECOMMENDER_BODIES: list[tuple[str, Message]] = [
    ("Recommend", pb.RecommendRequest(user_id="PLACEHOLDER", k=3)),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="PLACEHOLDER", k=3)),
    ("Explain", pb.ExplainRequest(user_id="u1", item_id="PLACEHOLDER")),
    ("BatchRecommend", pb.BatchRecommendRequest(widgets=[pb.WidgetRequest(
        widget_id="PLACEHOLDER", recommend=pb.RecommendRequest(user_id="u1", k=2))])),
]  # fmt: skip
SENTIMENT_BODIES: list[tuple[str, Message]] = [
    ("Classify", sentiment_pb2.ClassifyRequest(text="PLACEHOLDER")),
    ("ClassifyBatch", sentiment_pb2.ClassifyBatchRequest(
        requests=[sentiment_pb2.ClassifyRequest(text="fine"),
                  sentiment_pb2.ClassifyRequest(text="PLACEHOLDER")])),
]  # fmt: skip


def requests_counted(prefix: str, method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(f"{prefix}_requests_total", {"method": method, "code": code})
    return value or 0.0


def counted_soon(prefix: str, method: str, expected: float) -> float:
    """The method's INVALID_ARGUMENT count once it reaches ``expected`` (or after 5 s): the
    servers count a call after its status is sent, so the last call's count may trail it."""
    wait_for(lambda: requests_counted(prefix, method, "INVALID_ARGUMENT") >= expected, 5,
             f"{method}'s INVALID_ARGUMENT answers counted", poll_s=0.01)  # fmt: skip
    return requests_counted(prefix, method, "INVALID_ARGUMENT")


def send_raw(channel: grpc.Channel, path: str, body: bytes) -> grpc.RpcError:
    """``body`` as the request of ``path``, as is; the error the server answered."""
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(body, timeout=10)
    return info.value


def check_server(
    channel: grpc.Channel,
    service: str,
    prefix: str,
    bodies: Sequence[tuple[str, Message]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each method: FLOOD bodies with invalid UTF-8 and FLOOD corrupt ones, all refused as
    INVALID_ARGUMENT with an actionable message, all counted, one WARNING for the lot."""
    for method, message in bodies:
        type_name = message.DESCRIPTOR.full_name
        before = requests_counted(prefix, method, "INVALID_ARGUMENT")
        for body, reason in ((with_invalid_utf8(message), "UTF-8"), (CORRUPT, "corrupt")):
            for _ in range(FLOOD):
                error = send_raw(channel, f"/{service}/{method}", body)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error)
                details = error.details() or ""
                assert details.startswith(f"request body is not a valid {type_name}: "), details
                assert reason in details and "Error" not in details, details
        assert counted_soon(prefix, method, before + 2 * FLOOD) == before + 2 * FLOOD
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in caplog.records
    ]
    warnings = [r for r in caplog.records if r.getMessage() == "request body does not parse"]
    assert sorted(getattr(r, "method", "") for r in warnings) == sorted(m for m, _ in bodies)


# ------------------------------------------------------------------------------ recommender
@pytest.fixture
def recommender(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Running]:
    """The recommender serving a small model on loopback, its malformed-body log fresh."""
    users = [f"u{u}" for u in range(20) for _ in range(5)]
    items = [f"i{(u % 2) * 5 + i}" for u in range(20) for i in range(5)]
    config = TrainConfig(factors=4, iterations=5, num_threads=1)
    train(build_matrix(users, items, [1.0] * len(users)), config).save(tmp_path / "models")
    monkeypatch.setattr(recommender_server, "_malformed_log", LogThrottle(recommender_server.log))
    settings = RecommenderSettings(
        model_dir=str(tmp_path / "models"), redis_url=redis_url, key_prefix=key_prefix,
        host="127.0.0.1", grpc_port=0, metrics_port=0, http_port=0, workers=1, threads=4,
        grace_s=1.0,
        startup_timeout_s=30.0,
    )  # fmt: skip
    running = start(settings)
    try:
        yield running
    finally:
        stop_running(running, 0.5)


def test_recommender_answers_bodies_that_do_not_parse_invalid_argument_counted_and_quiet(
    recommender: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with grpc.insecure_channel(f"127.0.0.1:{recommender.port}") as channel:
        check_server(channel, recommender_server.SERVICE_NAME, "recsys_recommender",
                     RECOMMENDER_BODIES, caplog)  # fmt: skip
        # and the server still answers well-formed requests
        ok = channel.unary_unary(
            f"/{recommender_server.SERVICE_NAME}/Recommend",
            request_serializer=pb.RecommendRequest.SerializeToString,
            response_deserializer=pb.RecommendResponse.FromString,
        )(pb.RecommendRequest(user_id="u1", k=2), timeout=10)
        assert len(ok.items) == 2


# -------------------------------------------------------------------------------- sentiment
class FixedPredictor:
    """Every text positive: the transport is under test here, not the model."""

    model_version = "fixed"

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(np.array([0.1, 0.2, 0.7]), (len(texts), 1))


@pytest.fixture
def sentiment_channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[grpc.Channel]:
    """The sentiment gRPC server (the threaded one) on loopback, its log fresh."""
    monkeypatch.setattr(sentiment_server, "_malformed_log", LogThrottle(sentiment_server.log))
    health = HealthState([sentiment_server.SERVICE_NAME])
    settings = SentimentSettings(grpc_workers=4, max_text_chars=400, max_batch=8)
    server, port = sentiment_server.create_server(
        FixedPredictor(), settings, health, port=0, host="127.0.0.1"
    )
    server.start()
    health.set_serving(True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        health.shutdown()
        server.stop(grace=None)


def test_sentiment_answers_bodies_that_do_not_parse_invalid_argument_counted_and_quiet(
    sentiment_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    check_server(sentiment_channel, sentiment_server.SERVICE_NAME, "recsys_sentiment",
                 SENTIMENT_BODIES, caplog)  # fmt: skip
    ok = sentiment_channel.unary_unary(
        f"/{sentiment_server.SERVICE_NAME}/Classify",
        request_serializer=sentiment_pb2.ClassifyRequest.SerializeToString,
        response_deserializer=sentiment_pb2.ClassifyResponse.FromString,
    )(sentiment_pb2.ClassifyRequest(text="great"), timeout=10)
    assert ok.model_version == "fixed"
