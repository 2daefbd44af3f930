"""The recommender's HTTP/JSON transport: the gRPC servicer's calls, reached with JSON.

Paths follow AIP-136 custom methods on the service collection, ``POST
/v1/recommender:recommend`` and so on, the body being the request message in protobuf's JSON
mapping (``{"userId": "42", "k": 10}``). Every route calls the servicer's own synchronous
core call (conversion, validation, limits, metrics of results), so both transports refuse
and answer alike; errors are AIP-193 bodies (``recsys.http_api``). Runs on the gRPC
server's event loop (``__main__.listen``).
"""

from __future__ import annotations

import grpc
from starlette.types import ASGIApp

from recsys.auth import Policy
from recsys.grpc_requests import Refusal
from recsys.health import HealthState
from recsys.http_api import Authorizer, UnaryRoute, json_app
from recsys.recommender.v1 import recommender_pb2 as pb
from services.recommender import metrics
from services.recommender.server import (
    SERVICE_NAME,
    RecommenderServicer,
    similar_query,
    similar_response,
)

COLLECTION = "/v1/recommender"


def routes(servicer: RecommenderServicer) -> list[UnaryRoute]:
    def similar(request: pb.SimilarItemsRequest) -> pb.SimilarItemsResponse:
        return similar_response(servicer._service().similar_items(similar_query(request)))

    return [
        UnaryRoute(f"{COLLECTION}:recommend", "Recommend", pb.RecommendRequest,
                   pb.RecommendResponse, servicer._recommend,
                   "Top-k items for a user, with the reason for each"),
        UnaryRoute(f"{COLLECTION}:similarItems", "SimilarItems", pb.SimilarItemsRequest,
                   pb.SimilarItemsResponse, similar, "Items similar to an item"),
        UnaryRoute(f"{COLLECTION}:explain", "Explain", pb.ExplainRequest, pb.ExplainResponse,
                   servicer._explain, "Which of the user's items made an item score high"),
        UnaryRoute(f"{COLLECTION}:batchRecommend", "BatchRecommend", pb.BatchRecommendRequest,
                   pb.BatchRecommendResponse, servicer._batch,
                   "Several widgets in one call, each answered or refused on its own"),
    ]  # fmt: skip


def observe(method: str, code: str, seconds: float) -> None:
    metrics.HTTP_REQUESTS.labels(method, code).inc()
    metrics.HTTP_LATENCY.labels(method).observe(seconds)


def authorizer(policy: Policy) -> Authorizer:
    """The gRPC server's credentials check for HTTP: the same policy, the same
    ``Authorization: Bearer`` value, the same refusals and auth counter. Only tokens: the
    HTTP listener reads no client certificate names."""

    def authorize(method: str, headers: dict[str, str]) -> Refusal | None:
        denial = policy.decide(f"{SERVICE_NAME}/{method}", headers.get("authorization"))
        if denial is None:
            return None
        metrics.AUTH_DENIED.labels(method, denial.reason).inc()
        code = grpc.StatusCode[denial.status]
        return code, denial.message

    return authorize


def create_app(servicer: RecommenderServicer, health: HealthState) -> ASGIApp:
    return json_app(
        routes(servicer),
        title="recsys.recommender.v1.RecommenderService (HTTP/JSON)",
        version="v1",
        ready=lambda: health.serving,
        observe=observe,
        authorize=None if servicer.auth is None else authorizer(servicer.auth),
    )
