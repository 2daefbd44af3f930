"""The servicer's error mapping, with a recording stand-in for the (aio) gRPC context.

Real-server behaviour (status codes on the wire) is in tests/integration; this checks the
branches that are hard to reach over a real connection: an expired deadline, a bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from tiny_recommender import tiny_model

from recsys.grpc_requests import MalformedRequest
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.store.memory import InMemoryFeatureStore
from services.recommender.server import RecommenderServicer
from services.recommender.service import RecommenderService, StateReader


class AbortedError(Exception):
    pass


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str) -> Any:
        self.code, self.details = code, details
        raise AbortedError


def run(call: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(call)


def servicer() -> RecommenderServicer:
    model = tiny_model()
    return RecommenderServicer(RecommenderService(lambda: model,
                                                  StateReader(InMemoryFeatureStore())))  # fmt: skip


def test_expired_deadline_is_deadline_exceeded_without_doing_the_work() -> None:
    ctx = Context(remaining=0.0)
    with pytest.raises(AbortedError):
        run(servicer().Recommend(pb.RecommendRequest(user_id="ua", k=2), ctx))  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_domain_error_maps_to_its_code_with_the_message() -> None:
    ctx = Context(remaining=5.0)
    with pytest.raises(AbortedError):
        run(servicer().SimilarItems(pb.SimilarItemsRequest(item_id="zz", k=2), ctx))  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.NOT_FOUND and "'zz'" in ctx.details


def test_a_bug_is_internal_without_details() -> None:
    s = servicer()
    assert s.service is not None
    s.service.models = lambda: (_ for _ in ()).throw(ZeroDivisionError("secret"))
    ctx = Context(remaining=None)
    with pytest.raises(AbortedError):
        run(s.Recommend(pb.RecommendRequest(user_id="ua", k=2), ctx))  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.INTERNAL and "secret" not in ctx.details


def test_not_ready_is_unavailable() -> None:
    ctx = Context(remaining=None)
    with pytest.raises(AbortedError):
        run(RecommenderServicer().Recommend(pb.RecommendRequest(user_id="ua", k=2), ctx))  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.UNAVAILABLE


def test_a_body_that_does_not_parse_is_invalid_argument_and_counted() -> None:
    """Regression: grpc answered UNKNOWN before the servicer ran, and nothing counted it."""
    labels = {"method": "Explain", "code": "INVALID_ARGUMENT"}
    before = REGISTRY.get_sample_value("recsys_recommender_requests_total", labels)
    ctx = Context(remaining=5.0)
    request = MalformedRequest("recsys.recommender.v1.ExplainRequest", "String field had bad UTF-8")
    with pytest.raises(AbortedError):
        run(servicer().Explain(request, ctx))  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ctx.details == (
        "request body is not a valid recsys.recommender.v1.ExplainRequest: "
        "String field had bad UTF-8"
    )
    after = REGISTRY.get_sample_value("recsys_recommender_requests_total", labels)
    assert before is not None  # the series exists from import, before any call
    assert after == before + 1
