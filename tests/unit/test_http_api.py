"""The HTTP/JSON transport's pure parts: status mapping, request parsing, the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import InvalidArgumentError, NotFoundError
from recsys.http_api import (
    HTTP_STATUS,
    UnaryRoute,
    answer,
    json_app,
    message_encoder,
    openapi_document,
    parse_request,
)
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.sentiment.v1 import sentiment_pb2


def echo(request: pb.RecommendRequest) -> pb.RecommendResponse:
    if request.user_id == "missing":
        raise NotFoundError("no such user")
    if request.k < 0:
        raise InvalidArgumentError("k must be positive")
    return pb.RecommendResponse(user_id=request.user_id, model_version=str(request.k))


ROUTE = UnaryRoute("/v1/x:recommend", "Recommend", pb.RecommendRequest, pb.RecommendResponse,
                   echo)  # fmt: skip


@pytest.mark.parametrize(
    ("code", "status"),
    [("INVALID_ARGUMENT", 400), ("NOT_FOUND", 404), ("UNAVAILABLE", 503),
     ("DEADLINE_EXCEEDED", 504), ("PERMISSION_DENIED", 403), ("UNAUTHENTICATED", 401),
     ("INTERNAL", 500), ("RESOURCE_EXHAUSTED", 429), ("FAILED_PRECONDITION", 400)],
)  # fmt: skip
def test_grpc_codes_map_to_the_aip193_http_statuses(code: str, status: int) -> None:
    assert HTTP_STATUS[grpc.StatusCode[code]] == status


def test_every_grpc_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


def test_the_body_is_the_protobuf_json_mapping() -> None:
    parsed = parse_request(ROUTE, b'{"userId": "u1", "k": 5, "filters": {"includeSeen": true}}')
    assert parsed == pb.RecommendRequest(user_id="u1", k=5, filters=pb.Filters(include_seen=True))
    # the proto field names are accepted too, as json_format does
    assert parse_request(ROUTE, b'{"user_id": "u1"}') == pb.RecommendRequest(user_id="u1")
    assert parse_request(ROUTE, b"") == pb.RecommendRequest()


@pytest.mark.parametrize(
    "body", [b"{", b'{"userID": "u1"}', b'{"k": "five"}', b"[1]", b"\xff\xfe", b'"text"']
)
def test_a_body_that_does_not_parse_is_invalid_argument(body: bytes) -> None:
    parsed = parse_request(ROUTE, body)
    assert isinstance(parsed, tuple)
    assert parsed[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_errors_answer_with_their_status_and_an_error_body() -> None:
    observed: list[tuple[str, str, float]] = []

    def observe(method: str, code: str, seconds: float) -> None:
        observed.append((method, code, seconds))

    status, body = answer(ROUTE, b'{"userId": "u1", "k": 3}', observe)
    assert status == 200
    assert json.loads(body) == {"userId": "u1", "modelVersion": "3"}
    status, body = answer(ROUTE, b'{"userId": "missing"}', observe)
    assert status == 404
    assert json.loads(body) == {
        "error": {"code": 404, "status": "NOT_FOUND", "message": "no such user"}
    }
    assert answer(ROUTE, b'{"k": -1}', observe)[0] == 400
    assert [(m, c) for m, c, _ in observed] == [
        ("Recommend", "OK"),
        ("Recommend", "NOT_FOUND"),
        ("Recommend", "INVALID_ARGUMENT"),
    ]


def test_a_bug_is_internal_without_details() -> None:
    def broken(_: pb.RecommendRequest) -> pb.RecommendResponse:
        raise KeyError("secret internals")

    route = UnaryRoute("/v1/x", "Recommend", pb.RecommendRequest, pb.RecommendResponse, broken)
    status, body = answer(route, b"{}")
    assert status == 500
    assert "secret" not in body.decode()


def test_openapi_follows_the_descriptors() -> None:
    route = UnaryRoute("/v1/s:classify", "Classify", sentiment_pb2.ClassifyRequest,
                       sentiment_pb2.ClassifyResponse, lambda r: r)  # fmt: skip
    doc = openapi_document([ROUTE, route], title="t", version="v1")
    assert set(doc["paths"]) == {"/v1/x:recommend", "/v1/s:classify"}
    schemas = doc["components"]["schemas"]
    for message in (pb.RecommendRequest, pb.RecommendResponse, pb.Filters, pb.ScoredItem):
        schema = schemas[message.DESCRIPTOR.full_name]
        assert set(schema["properties"]) == {f.json_name for f in message.DESCRIPTOR.fields}
    items = schemas["recsys.recommender.v1.RecommendResponse"]["properties"]["items"]
    assert items == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/recsys.recommender.v1.ScoredItem"},
    }
    json.dumps(doc)  # serialisable as served


# ------------------------------------------------------------------ the fast JSON encoder
def scored_items() -> st.SearchStrategy[list[pb.ScoredItem]]:
    item = st.builds(
        pb.ScoredItem,
        item_id=st.text(max_size=8),
        score=st.floats(width=32, allow_nan=True, allow_infinity=True),
        reason=st.sampled_from([0, 1, 2, 3, 4, 99]),  # 99: a value this build does not name
    )
    return st.lists(item, max_size=5)


@settings(max_examples=200, deadline=None)
@given(items=scored_items(), user=st.text(max_size=8), version=st.text(max_size=8),
       degraded=st.booleans(), code=st.integers(-(2**31), 2**31 - 1))  # fmt: skip
def test_the_fast_encoder_writes_what_message_to_dict_writes(
    items: list[pb.ScoredItem], user: str, version: str, degraded: bool, code: int
) -> None:
    answer = pb.RecommendResponse(user_id=user, items=items, model_version=version,
                                  degraded=degraded)  # fmt: skip
    assert message_encoder(answer.DESCRIPTOR)(answer) == json_format.MessageToDict(answer)
    batch = pb.BatchRecommendResponse()
    w = batch.widgets.add(widget_id=user)
    w.recommend.CopyFrom(answer)
    batch.widgets.add(widget_id=version, error_code=code, error_message=user)
    assert message_encoder(batch.DESCRIPTOR)(batch) == json_format.MessageToDict(batch)


@pytest.mark.parametrize("sentiment", [None, 0.0, -0.25])
def test_the_fast_encoder_keeps_optional_presence(sentiment: float | None) -> None:
    answer = pb.ExplainResponse(user_id="u", item_id="i", score=0.5,
                                contributions=[pb.Contribution(item_id="j", weight=0.1)],
                                sentiment_average=sentiment)  # fmt: skip
    assert message_encoder(answer.DESCRIPTOR)(answer) == json_format.MessageToDict(answer)


def test_the_authorizer_refuses_before_the_body_is_read_or_the_handler_runs() -> None:
    calls: list[str] = []

    def handler(request: pb.RecommendRequest) -> pb.RecommendResponse:
        calls.append(request.user_id)
        return pb.RecommendResponse(user_id=request.user_id)

    def authorize(method: str, headers: dict[str, str]) -> tuple[grpc.StatusCode, str] | None:
        if headers.get("authorization") != "Bearer good":
            return grpc.StatusCode.UNAUTHENTICATED, f"{method} needs a bearer token"
        return None

    route = UnaryRoute("/v1/x:recommend", "Recommend", pb.RecommendRequest,
                       pb.RecommendResponse, handler)  # fmt: skip
    app = json_app([route], title="t", version="v1", ready=lambda: True, authorize=authorize)

    def call(headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"userId": "u1"}', "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        async def run() -> None:
            await app(scope, receive, send)

        scope = {"type": "http", "method": "POST", "path": "/v1/x:recommend",
                 "headers": headers}  # fmt: skip
        asyncio.run(run())
        return int(sent[0]["status"]), json.loads(sent[1]["body"])

    status, body = call([])
    assert (status, body["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert call([(b"Authorization", b"Bearer bad")])[0] == 401
    assert calls == []
    assert call([(b"Authorization", b"Bearer good")]) == (200, {"userId": "u1"})
    assert calls == ["u1"]
