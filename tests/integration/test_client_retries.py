"""The example client retries UNAVAILABLE and honours its deadline, over a real gRPC server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys_tools.client import RecommenderClient, make_channel

pytestmark = pytest.mark.integration


class FlakyRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Answers UNAVAILABLE ``failures`` times, then succeeds; can also stall."""

    def __init__(self, failures: int, stall_s: float = 0.0) -> None:
        self.failures = failures
        self.stall_s = stall_s
        self.calls = 0
        self._lock = threading.Lock()

    def Recommend(  # noqa: N802 - gRPC method name
        self, request: recommender_pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        with self._lock:
            self.calls += 1
            calls = self.calls
        if calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        time.sleep(self.stall_s)
        return recommender_pb2.RecommendResponse(
            user_id=request.user_id,
            items=[recommender_pb2.ScoredItem(item_id="i1", score=1.0)],
            model_version="test",
        )


def _serve(servicer: FlakyRecommender) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyRecommender, int]]:
    servicer = FlakyRecommender(failures=2)  # type: ignore[abstract]  # only Recommend is served
    for port in _serve(servicer):
        yield servicer, port


@pytest.fixture
def slow() -> Iterator[tuple[FlakyRecommender, int]]:
    servicer = FlakyRecommender(failures=0, stall_s=1.0)  # type: ignore[abstract]
    for port in _serve(servicer):
        yield servicer, port


def test_client_retries_unavailable_until_success(flaky: tuple[FlakyRecommender, int]) -> None:
    servicer, port = flaky
    with make_channel(f"127.0.0.1:{port}", max_attempts=5) as channel:
        response = RecommenderClient(channel, timeout_s=5.0).recommend("u1", 1)
    assert [item.item_id for item in response.items] == ["i1"]
    assert servicer.calls == 3


def test_client_gives_up_after_max_attempts(flaky: tuple[FlakyRecommender, int]) -> None:
    servicer, port = flaky
    with (
        make_channel(f"127.0.0.1:{port}", max_attempts=2) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        RecommenderClient(channel, timeout_s=5.0).recommend("u1", 1)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 2


def test_client_deadline_is_enforced(slow: tuple[FlakyRecommender, int]) -> None:
    _, port = slow
    with make_channel(f"127.0.0.1:{port}") as channel:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            RecommenderClient(channel, timeout_s=0.2).recommend("u1", 1)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.9
