"""Authentication and per-method authorisation on the real servers, over loopback.

Each service runs as a deployment runs it (``python -m services.<name>``) with
``AUTH_MODE=required`` and a credentials directory written by ``recsys auth add-client``:
no token and a wrong token are UNAUTHENTICATED, a known client calling a method it is not
granted is PERMISSION_DENIED, granted calls go through, and health and reflection stay
open (Kubernetes probes carry no token). Every refusal is counted by method and reason.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tls_certs import HAVE_OPENSSL, make_certs

from recsys.auth import ROLES, load_policy
from recsys.recommender.v1 import recommender_pb2 as rpb
from recsys.recommender.v1 import recommender_pb2_grpc as rpb_grpc
from recsys.sentiment.v1 import sentiment_pb2 as spb
from recsys.sentiment.v1 import sentiment_pb2_grpc as spb_grpc
from recsys_tools import cli
from recsys_tools.commands.auth import add_client
from recsys_tools.harness import (
    QUIET_ENV,
    Service,
    free_port,
    wait_for,
    wait_serving,
)

pytestmark = pytest.mark.integration

RECOMMENDER = "recsys.recommender.v1.RecommenderService"
SENTIMENT = "recsys.sentiment.v1.SentimentService"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True)
class Tokens:
    directory: Path
    frontend: str  # Recommend, SimilarItems, BatchRecommend
    support: str  # every recommender method
    crm: str  # Classify, ClassifyBatch


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    directory = tmp_path_factory.mktemp("credentials")
    return Tokens(
        directory,
        add_client(directory, "web-frontend", list(ROLES["frontend"]))[1],
        add_client(directory, "support-console", list(ROLES["support"]))[1],
        add_client(directory, "crm", list(ROLES["crm"]))[1],
    )


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    """The status ``call`` ends with (OK when it returns)."""
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def details_of(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(info.value.details())


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == want:
            return float(match.group(2))
    raise AssertionError(f"{name}{{{want}}} not exported")


def assert_health_and_reflection_open(target: str, api: str) -> None:
    with grpc.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        status = check(health_pb2.HealthCheckRequest(service=api), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        listed = {s.name for s in reply.list_services_response.service}
        assert {api, health.SERVICE_NAME} <= listed


def start(name: str, module_args: list[str], env: dict[str, str], tokens: Tokens,
          work: Path) -> tuple[Service, int]:  # fmt: skip
    metrics_port = free_port()
    service = Service(name, module_args, {**QUIET_ENV, **env,
                      "AUTH_MODE": "required", "AUTH_CREDENTIALS_FILE": str(tokens.directory),
                      "METRICS_PORT": str(metrics_port)},
                      log_path=work / f"{name}.log", port=free_port())  # fmt: skip
    service.start()
    try:
        wait_serving(service, 180)  # the harness's own probe: health needs no token
    except BaseException:
        service.stop(timeout_s=5)
        raise
    return service, metrics_port


# ------------------------------------------------------------------------ recommender
@pytest.fixture(scope="module")
def recommender(
    redis_url: str,
    recommender_models: Path,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Service, int]]:
    env = {"RECSYS_MODEL_DIR": str(recommender_models), "REDIS_URL": redis_url,
           "REDIS_KEY_PREFIX": "authtest:", "WORKERS": "1"}  # fmt: skip
    service, metrics_port = start("recommender", ["services.recommender"], env, tokens,
                                  tmp_path_factory.mktemp("recommender"))  # fmt: skip
    try:
        yield service, metrics_port
    finally:
        service.stop(timeout_s=10)


def test_recommender_refuses_calls_without_a_known_token(
    recommender: tuple[Service, int], tokens: Tokens
) -> None:
    service, metrics_port = recommender
    before = metric(metrics_port, "recsys_recommender_auth_denied_total",
                    method="Recommend", reason="missing")  # fmt: skip
    with grpc.insecure_channel(service.target) as channel:
        call = rpb_grpc.RecommenderServiceStub(channel).Recommend
        request = rpb.RecommendRequest(user_id="u1", k=2)
        assert code_of(call, request, timeout=5) == UNAUTHENTICATED
        assert "authorization: Bearer" in details_of(call, request, timeout=5)
        wrong = bearer(tokens.frontend[:-1] + ("A" if tokens.frontend[-1] != "A" else "B"))
        assert code_of(call, request, timeout=5, metadata=wrong) == UNAUTHENTICATED
        assert code_of(call, request, timeout=5, metadata=(("authorization", "x"),)) == (
            UNAUTHENTICATED
        )
    assert metric(metrics_port, "recsys_recommender_auth_denied_total",
                  method="Recommend", reason="missing") == before + 2  # fmt: skip
    assert metric(metrics_port, "recsys_recommender_auth_denied_total",
                  method="Recommend", reason="unknown") >= 1  # fmt: skip
    assert metric(metrics_port, "recsys_recommender_requests_total",
                  method="Recommend", code="UNAUTHENTICATED") >= 4  # fmt: skip
    assert tokens.frontend[:12] not in service.log_text()


def test_recommender_allows_each_client_its_methods_only(
    recommender: tuple[Service, int], tokens: Tokens
) -> None:
    service, metrics_port = recommender
    with grpc.insecure_channel(service.target) as channel:
        stub = rpb_grpc.RecommenderServiceStub(channel)
        recommend = rpb.RecommendRequest(user_id="u1", k=2)
        explain = rpb.ExplainRequest(user_id="u1", item_id="i1", k=2)
        web, support = bearer(tokens.frontend), bearer(tokens.support)
        reply = stub.Recommend(recommend, timeout=5, metadata=web)
        assert len(reply.items) == 2
        similar = rpb.SimilarItemsRequest(item_id="i1", k=2)
        assert code_of(stub.SimilarItems, similar, timeout=5, metadata=web) == grpc.StatusCode.OK
        batch = rpb.BatchRecommendRequest(
            widgets=[rpb.WidgetRequest(widget_id="w", recommend=recommend)]
        )
        assert code_of(stub.BatchRecommend, batch, timeout=5, metadata=web) == grpc.StatusCode.OK
        assert code_of(stub.Explain, explain, timeout=5, metadata=web) == PERMISSION_DENIED
        message = details_of(stub.Explain, explain, timeout=5, metadata=web)
        assert "'web-frontend'" in message and f"{RECOMMENDER}/Explain" in message
        assert code_of(stub.Explain, explain, timeout=5, metadata=support) == grpc.StatusCode.OK
        # a token of the other service's client is known, but grants nothing here
        crm = bearer(tokens.crm)
        assert code_of(stub.Recommend, recommend, timeout=5, metadata=crm) == PERMISSION_DENIED
    assert metric(metrics_port, "recsys_recommender_auth_denied_total",
                  method="Explain", reason="forbidden") >= 2  # fmt: skip


def test_recommender_health_and_reflection_stay_open(recommender: tuple[Service, int]) -> None:
    assert_health_and_reflection_open(recommender[0].target, RECOMMENDER)


def test_recsys_client_sends_its_token(
    recommender: tuple[Service, int], tokens: Tokens, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    target = recommender[0].target
    args = ["client", "recommend", "--user", "u1", "-k", "2", "--target", target]
    monkeypatch.delenv("RECSYS_TOKEN", raising=False)
    capsys.readouterr()
    assert cli.main(args) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert cli.main([*args, "--token", tokens.frontend]) == 0
    assert "modelVersion" in capsys.readouterr().out
    monkeypatch.setenv("RECSYS_TOKEN", tokens.frontend)
    assert cli.main(args) == 0
    explain = ["client", "explain", "--user", "u1", "--item", "i1", "--target", target]
    assert cli.main(explain) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_required_auth_without_credentials_fails_the_start_naming_the_variable(
    tmp_path: Path, recommender_models: Path
) -> None:
    service = Service("recommender-noauth", ["services.recommender"],
                      {**QUIET_ENV, "RECSYS_MODEL_DIR": str(recommender_models)},
                      log_path=tmp_path / "noauth.log", port=free_port(),
                      unset=("AUTH_MODE", "AUTH_CREDENTIALS_FILE"))  # fmt: skip
    service.start()
    try:
        wait_for(lambda: service.returncode() is not None, 60, "the refused start to exit")
        assert service.returncode() == 2
        lines = [line for line in service.log_text().splitlines() if line and "====" not in line]
        assert lines == [
            "error: AUTH_CREDENTIALS_FILE is not set: AUTH_MODE=required (the default) needs "
            "the clients' credentials (recsys auth add-client); AUTH_MODE=off is for a local "
            "demo"
        ]
    finally:
        service.stop(timeout_s=5)


@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl CLI")
def test_mutual_tls_certificate_name_identifies_a_client(
    redis_url: str, recommender_models: Path, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    creds = tmp_path / "creds.json"
    add_client(creds, "cert-frontend", list(ROLES["frontend"]), tls_name="client")
    assert load_policy(str(creds)).uses_tls_names
    env = {"RECSYS_MODEL_DIR": str(recommender_models), "REDIS_URL": redis_url,
           "REDIS_KEY_PREFIX": "authtls:", "WORKERS": "1",
           "TLS_CERT_FILE": str(certs["server.pem"]), "TLS_KEY_FILE": str(certs["server.key"]),
           "TLS_CLIENT_CA_FILE": str(certs["ca.pem"]),
           "AUTH_MODE": "required", "AUTH_CREDENTIALS_FILE": str(creds)}  # fmt: skip
    service = Service("recommender-mtls", ["services.recommender"], {**QUIET_ENV, **env},
                      log_path=tmp_path / "mtls.log", port=free_port())  # fmt: skip
    ca = certs["ca.pem"].read_bytes()
    creds_tls = grpc.ssl_channel_credentials(
        ca, certs["client.key"].read_bytes(), certs["client.pem"].read_bytes()
    )
    service.start()
    try:
        with grpc.secure_channel(f"localhost:{service.port}", creds_tls) as channel:
            stub = rpb_grpc.RecommenderServiceStub(channel)
            ready = health_pb2_grpc.HealthStub(channel).Check
            service.wait_ready(
                lambda: code_of(ready, health_pb2.HealthCheckRequest(), timeout=1)
                == grpc.StatusCode.OK,
                timeout_s=120, what="health over mTLS", interval_s=0.2,
            )  # fmt: skip
            request = rpb.RecommendRequest(user_id="u1", k=2)
            assert len(stub.Recommend(request, timeout=5).items) == 2
            explain = rpb.ExplainRequest(user_id="u1", item_id="i1")
            assert code_of(stub.Explain, explain, timeout=5) == PERMISSION_DENIED
            wrong = bearer("rsk_not-a-token")
            assert code_of(stub.Recommend, request, timeout=5, metadata=wrong) == UNAUTHENTICATED
    finally:
        service.stop(timeout_s=10)


# -------------------------------------------------------------------------- sentiment
@pytest.fixture(scope="module")
def sentiment(
    tokens: Tokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, int]]:
    pytest.importorskip("tensorflow")
    from services.sentiment.smoke import train_smoke_model

    work = tmp_path_factory.mktemp("sentiment")
    train_smoke_model(work / "model")
    env = {"SENTIMENT_BACKEND": "inprocess", "SENTIMENT_MODEL_DIR": str(work / "model")}
    service, metrics_port = start("sentiment", ["services.sentiment", "serve"], env, tokens, work)
    try:
        yield service, metrics_port
    finally:
        service.stop(timeout_s=10)


@pytest.mark.sentiment
def test_sentiment_authenticates_and_authorises(
    sentiment: tuple[Service, int], tokens: Tokens
) -> None:
    service, metrics_port = sentiment
    request = spb.ClassifyRequest(text="arrived broken")
    with grpc.insecure_channel(service.target) as channel:
        stub = spb_grpc.SentimentServiceStub(channel)
        assert code_of(stub.Classify, request, timeout=10) == UNAUTHENTICATED
        wrong = bearer("rsk_" + "x" * 43)
        assert code_of(stub.Classify, request, timeout=10, metadata=wrong) == UNAUTHENTICATED
        reply = stub.Classify(request, timeout=10, metadata=bearer(tokens.crm))
        assert reply.model_version
        batch = spb.ClassifyBatchRequest(requests=[request])
        assert code_of(stub.ClassifyBatch, batch, timeout=10, metadata=bearer(tokens.crm)) == (
            grpc.StatusCode.OK
        )
        web = bearer(tokens.frontend)
        assert code_of(stub.Classify, request, timeout=10, metadata=web) == PERMISSION_DENIED
        assert f"{SENTIMENT}/Classify" in details_of(stub.Classify, request, timeout=10,
                                                       metadata=web)  # fmt: skip
    for reason, least in (("missing", 1), ("unknown", 1), ("forbidden", 2)):
        assert metric(metrics_port, "recsys_sentiment_auth_denied_total",
                      method="Classify", reason=reason) >= least  # fmt: skip
    assert metric(metrics_port, "recsys_sentiment_auth_denied_total",
                  method="ClassifyBatch", reason="forbidden") == 0  # fmt: skip


@pytest.mark.sentiment
def test_sentiment_health_and_reflection_stay_open(sentiment: tuple[Service, int]) -> None:
    assert_health_and_reflection_open(sentiment[0].target, SENTIMENT)
