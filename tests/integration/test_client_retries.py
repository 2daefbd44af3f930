"""The example client retries UNAVAILABLE and honours its deadline, over a real gRPC server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys_tools import cli
from recsys_tools.client import RecommenderClient, make_channel
from recsys_tools.harness import free_port

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


@pytest.fixture
def healthy() -> Iterator[tuple[FlakyRecommender, int]]:
    servicer = FlakyRecommender(failures=0)  # type: ignore[abstract]
    for port in _serve(servicer):
        yield servicer, port


def test_client_with_one_attempt_calls_once_and_succeeds(
    healthy: tuple[FlakyRecommender, int],
) -> None:
    """Regression: ``max_attempts=1`` built a retry policy gRPC rejects (it needs >= 2), so
    every call failed with INVALID_ARGUMENT before reaching the server."""
    servicer, port = healthy
    with make_channel(f"127.0.0.1:{port}", max_attempts=1) as channel:
        response = RecommenderClient(channel, timeout_s=5.0).recommend("u1", 1)
    assert [item.item_id for item in response.items] == ["i1"]
    assert servicer.calls == 1


def test_client_with_one_attempt_does_not_retry_unavailable(
    flaky: tuple[FlakyRecommender, int],
) -> None:
    servicer, port = flaky
    with (
        make_channel(f"127.0.0.1:{port}", max_attempts=1) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        RecommenderClient(channel, timeout_s=5.0).recommend("u1", 1)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 1


def test_cli_attempts_1_prints_the_response(
    healthy: tuple[FlakyRecommender, int], capsys: pytest.CaptureFixture[str]
) -> None:
    _, port = healthy
    argv = ["client", "recommend", "--target", f"127.0.0.1:{port}", "--user", "u1",
            "--attempts", "1"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["items"][0]["itemId"] == "i1"


def test_cli_says_no_server_answered_when_nothing_listens_at_the_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``wait_for_ready`` turns a wrong target into DEADLINE_EXCEEDED; the message must
    say that nothing answered there, which is what the user has to fix."""
    target = f"127.0.0.1:{free_port()}"
    argv = ["client", "classify", "--target", target, "--text", "ok", "--timeout", "0.3"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: DEADLINE_EXCEEDED")
    assert f"no server answered at {target}" in err
