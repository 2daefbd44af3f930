"""The recommender's HTTP/JSON transport against the real server and a real redis-server.

Both transports run in one process on one loop; each case checks that HTTP answers what
gRPC answers for the same request (the items, or the status its error maps to).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
from recsys.store import FeatureEvent, KeySchema
from recsys.store.redis_store import RedisFeatureStore
from services.recommender import metrics
from services.recommender.__main__ import Running, listen, make_ready, start, stop_running
from services.recommender.config import RecommenderSettings
from services.recommender.training import TrainConfig, build_matrix, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two groups of five items, each user clicking one group."""
    store = tmp_path_factory.mktemp("models")
    users = [f"u{u}" for u in range(20) for _ in range(5)]
    items = [f"i{(u % 2) * 5 + i}" for u in range(20) for i in range(5)]
    config = TrainConfig(factors=4, iterations=5, num_threads=1)
    train(build_matrix(users, items, [1.0] * len(users)), config).save(store)
    return store


def settings_for(redis_url: str, prefix: str, store: Path) -> RecommenderSettings:
    return RecommenderSettings(
        model_dir=str(store), redis_url=redis_url, key_prefix=prefix, host="127.0.0.1",
        grpc_port=0, metrics_port=0, http_port=0, workers=1, threads=4, grace_s=2.0,
        startup_timeout_s=30.0, reload_interval_s=0.0,
    )  # fmt: skip


@pytest.fixture
def running(redis_url: str, key_prefix: str, model_store: Path) -> Iterator[Running]:
    server = start(settings_for(redis_url, key_prefix, model_store))
    try:
        yield server
    finally:
        stop_running(server, 0.5)


def post(port: int, path: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def grpc_stub(server: Running) -> pb_grpc.RecommenderServiceStub:
    return pb_grpc.RecommenderServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def test_recommend_over_http_is_the_grpc_answer_in_json(
    running: Running, redis_client: Any, key_prefix: str
) -> None:
    store = RedisFeatureStore(redis_client, KeySchema(key_prefix))
    now = time.time()
    store.apply_events([FeatureEvent(f"e{n}", "new-user", f"i{n}", "click", 2.0, now)
                        for n in range(3)])  # fmt: skip
    over_grpc = grpc_stub(running).Recommend(pb.RecommendRequest(user_id="new-user", k=4))
    status, body = post(running.http.port, "/v1/recommender:recommend",
                        {"userId": "new-user", "k": 4})  # fmt: skip
    assert status == 200
    answer = json_format.ParseDict(body, pb.RecommendResponse())
    assert [i.item_id for i in answer.items] == [i.item_id for i in over_grpc.items]
    assert body["items"][0]["reason"].startswith("REASON_")  # enums by name, as the mapping says
    assert answer.model_version == over_grpc.model_version


def test_similar_explain_and_batch_answer(running: Running) -> None:
    port = running.http.port
    status, similar = post(port, "/v1/recommender:similarItems", {"itemId": "i0", "k": 3})
    assert status == 200 and len(similar["items"]) == 3
    status, explain = post(port, "/v1/recommender:explain", {"userId": "u0", "itemId": "i1"})
    assert status == 200 and explain["itemId"] == "i1" and explain["contributions"]
    status, batch = post(port, "/v1/recommender:batchRecommend", {"widgets": [
        {"widgetId": "a", "recommend": {"userId": "u0", "k": 2}},
        {"widgetId": "b", "similarItems": {"itemId": "nope", "k": 2}},
    ]})  # fmt: skip
    assert status == 200
    a, b = batch["widgets"]
    assert len(a["recommend"]["items"]) == 2
    assert b["errorCode"] == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize(
    ("path", "body", "http_status", "status"),
    [
        ("/v1/recommender:recommend", {"userId": "u0", "k": 100000}, 400, "INVALID_ARGUMENT"),
        ("/v1/recommender:recommend", {"userId": "", "k": 3}, 400, "INVALID_ARGUMENT"),
        ("/v1/recommender:recommend", {"userID": "u0"}, 400, "INVALID_ARGUMENT"),
        ("/v1/recommender:recommend", b"{not json", 400, "INVALID_ARGUMENT"),
        ("/v1/recommender:recommend", {"userId": "u0", "k": "many"}, 400, "INVALID_ARGUMENT"),
        ("/v1/recommender:similarItems", {"itemId": "nope", "k": 3}, 404, "NOT_FOUND"),
        ("/v1/recommender:explain", {"userId": "u0", "itemId": "nope"}, 404, "NOT_FOUND"),
        ("/v1/recommender:nothing", {}, 404, "NOT_FOUND"),
    ],
)
def test_refusals_are_aip193_errors_with_the_grpc_status(
    running: Running, path: str, body: bytes | dict[str, Any], http_status: int, status: str
) -> None:
    code, answer = post(running.http.port, path, body)
    assert code == http_status
    assert answer["error"]["status"] == status
    assert answer["error"]["code"] == http_status
    assert answer["error"]["message"]


def test_limits_refuse_over_http_as_over_grpc(running: Running) -> None:
    request = pb.RecommendRequest(user_id="u0", k=100000)
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub(running).Recommend(request)
    _, answer = post(running.http.port, "/v1/recommender:recommend",
                     json_format.MessageToDict(request))  # fmt: skip
    assert info.value.code().name == answer["error"]["status"]
    assert info.value.details() == answer["error"]["message"]


def test_counted_in_the_http_metrics(running: Running) -> None:
    before = metrics.HTTP_REQUESTS.labels("Recommend", "OK")._value.get()
    bad = metrics.HTTP_REQUESTS.labels("Recommend", "INVALID_ARGUMENT")._value.get()
    post(running.http.port, "/v1/recommender:recommend", {"userId": "u0", "k": 2})
    post(running.http.port, "/v1/recommender:recommend", {"userId": "u0", "k": -1})
    assert metrics.HTTP_REQUESTS.labels("Recommend", "OK")._value.get() == before + 1
    assert metrics.HTTP_REQUESTS.labels("Recommend", "INVALID_ARGUMENT")._value.get() == bad + 1


def test_openapi_is_generated_from_the_messages(running: Running) -> None:
    status, doc = get(running.http.port, "/openapi.json")
    assert status == 200
    assert set(doc["paths"]) == {
        "/v1/recommender:recommend", "/v1/recommender:similarItems",
        "/v1/recommender:explain", "/v1/recommender:batchRecommend",
    }  # fmt: skip
    schemas = doc["components"]["schemas"]
    request = schemas["recsys.recommender.v1.RecommendRequest"]["properties"]
    # every field of the message, under its JSON name: the document follows the proto
    assert set(request) == {f.json_name for f in pb.RecommendRequest.DESCRIPTOR.fields}
    assert schemas["recsys.recommender.v1.Reason"]["enum"][0] == "REASON_UNSPECIFIED"


def test_unavailable_until_ready_then_serving(
    redis_url: str, key_prefix: str, model_store: Path
) -> None:
    settings = settings_for(redis_url, key_prefix, model_store)
    server = listen(settings)
    try:
        port = server.http.port
        assert get(port, "/readyz")[0] == 503
        assert get(port, "/healthz")[0] == 200
        code, answer = post(port, "/v1/recommender:recommend", {"userId": "u0", "k": 2})
        assert (code, answer["error"]["status"]) == (503, "UNAVAILABLE")
        make_ready(settings, server, threading.Event())
        assert get(port, "/readyz")[0] == 200
        assert post(port, "/v1/recommender:recommend", {"userId": "u0", "k": 2})[0] == 200
    finally:
        stop_running(server, 0.5)
    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")  # stopped: the port is closed


def test_a_body_over_the_limit_and_a_wrong_method_are_refused(running: Running) -> None:
    from recsys.http_api import MAX_BODY_BYTES

    big = b'{"userId": "' + b"x" * MAX_BODY_BYTES + b'"}'
    code, answer = post(running.http.port, "/v1/recommender:recommend", big)
    assert (code, answer["error"]["status"]) == (413, "RESOURCE_EXHAUSTED")
    code, answer = get(running.http.port, "/v1/recommender:recommend")
    assert code == 405 and answer["error"]["message"]
    # the server is still there
    assert post(running.http.port, "/v1/recommender:recommend", {"userId": "u0", "k": 2})[0] == 200


def test_http_makes_the_grpc_servers_credentials_check(
    redis_url: str, key_prefix: str, model_store: Path
) -> None:
    from dataclasses import replace

    from recsys.auth import AuthSettings, Client, Policy

    service = "recsys.recommender.v1.RecommenderService"
    policy = Policy([
        Client("frontend", frozenset({f"{service}/Recommend"}), hashlib.sha256(b"fe").digest()),
    ])  # fmt: skip
    settings = replace(settings_for(redis_url, key_prefix, model_store),
                       auth=AuthSettings("required", "", policy))  # fmt: skip
    server = start(settings)
    try:
        port = server.http.port
        body = json.dumps({"userId": "u0", "k": 2}).encode()

        def call(path: str, token: str | None) -> tuple[int, dict[str, Any]]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                             headers=headers)  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return int(reply.status), json.loads(reply.read())
            except urllib.error.HTTPError as err:
                return int(err.code), json.loads(err.read())

        assert call("/v1/recommender:recommend", None)[0] == 401
        assert call("/v1/recommender:recommend", "wrong")[0] == 401
        assert call("/v1/recommender:recommend", "fe")[0] == 200
        # allowed Recommend only: Explain is forbidden to this client, over HTTP as over gRPC
        code, answer = call("/v1/recommender:explain", "fe")
        assert (code, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
    finally:
        stop_running(server, 0.5)
