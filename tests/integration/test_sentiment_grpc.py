"""The sentiment gRPC service and both backends, over real gRPC on loopback.

The TF Serving backend talks to a real ``tensorflow.serving.PredictionService``
server started here: there is no ``tensorflow_model_server`` binary on PyPI, so
the server is a minimal stand-in that implements ``Predict`` from the
``tensorflow-serving-api`` stubs by running the exported SavedModel's
signature, the way TF Serving does. The wire protocol, request building and
response decoding of the backend are the ones a real TF Serving sees
(docs/sentiment.md shows how to point the backend at one).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from recsys.errors import UnavailableError  # noqa: E402
from recsys.health import HealthState  # noqa: E402
from recsys.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc  # noqa: E402
from services.sentiment.backends import (  # noqa: E402
    InProcessBackend,
    TFServingBackend,
    resolve_version_dir,
)
from services.sentiment.config import SentimentSettings  # noqa: E402
from services.sentiment.server import SERVICE_NAME, create_server  # noqa: E402
from services.sentiment.smoke import SAMPLE, train_smoke_model  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.sentiment]

MODEL_NAME = "sentiment"
#: A fixed sample: the smoke model's training texts plus texts it never saw.
FIXED_SAMPLE = [t for t, _ in SAMPLE] + [
    "meh",
    "It arrived. I opened it. It is a kettle.",
    "不错",
    "refund refund refund!!!",
    "🙂🙂🙂",
    "x" * 300,
]


class SavedModelPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]  # untyped
    """``Predict`` as TF Serving implements it, for one model from a version base directory."""

    def __init__(self, base_dir: Path, model_name: str) -> None:
        self.path, self.version = resolve_version_dir(base_dir)
        self.model_name = model_name
        self.loaded = tf.saved_model.load(str(self.path))

    def Predict(  # noqa: N802 (gRPC method name)
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        if spec.name != self.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")
        if spec.HasField("version") and spec.version.value != self.version:
            context.abort(grpc.StatusCode.NOT_FOUND, f"version {spec.version.value} not loaded")
        signature = spec.signature_name or "serving_default"
        if signature not in self.loaded.signatures:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature key {signature} not found"
            )
        fn = self.loaded.signatures[signature]
        try:
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            outputs = fn(**inputs)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            if not request.output_filter or key in request.output_filter:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sentiment-models")
    train_smoke_model(base, version=3)
    return base


@pytest.fixture(scope="module")
def tf_serving(model_dir: Path) -> Iterator[str]:
    """A PredictionService on a loopback port serving the smoke model; yields host:port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        SavedModelPredictionService(model_dir, MODEL_NAME), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def inprocess(model_dir: Path) -> InProcessBackend:
    return InProcessBackend(model_dir)


@pytest.fixture(scope="module")
def tfserving(tf_serving: str) -> Iterator[TFServingBackend]:
    backend = TFServingBackend(tf_serving, MODEL_NAME, timeout_s=10.0)
    try:
        yield backend
    finally:
        backend.close()


SETTINGS = SentimentSettings(max_text_chars=400, max_batch=8, grpc_workers=4)


@pytest.fixture(params=["inprocess", "tfserving"])
def stub(
    request: pytest.FixtureRequest, inprocess: InProcessBackend, tfserving: TFServingBackend
) -> Iterator[tuple[Any, grpc.Channel]]:
    backend = inprocess if request.param == "inprocess" else tfserving
    health = HealthState([SERVICE_NAME])
    server, port = create_server(backend, SETTINGS, health, port=0, host="127.0.0.1")
    server.start()
    health.set_serving(True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield sentiment_pb2_grpc.SentimentServiceStub(channel), channel
    finally:
        channel.close()
        server.stop(grace=None)


# --- the two backends -------------------------------------------------------------------


def test_tfserving_and_inprocess_backends_return_the_same_labels_on_a_fixed_sample(
    inprocess: InProcessBackend, tfserving: TFServingBackend
) -> None:
    local = inprocess.predict_proba(FIXED_SAMPLE)
    remote = tfserving.predict_proba(FIXED_SAMPLE)
    assert local.shape == remote.shape == (len(FIXED_SAMPLE), 3)
    assert local.argmax(axis=1).tolist() == remote.argmax(axis=1).tolist()
    np.testing.assert_allclose(local, remote, atol=1e-5)
    assert inprocess.model_version == tfserving.model_version == "3"


def test_smoke_model_gets_its_sample_right_through_both_backends(
    inprocess: InProcessBackend, tfserving: TFServingBackend
) -> None:
    texts = [t for t, _ in SAMPLE]
    labels = [lab for _, lab in SAMPLE]
    for backend in (inprocess, tfserving):
        probs = backend.predict_proba(texts)
        assert probs.argmax(axis=1).tolist() == labels
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_tfserving_backend_names_the_address_when_nothing_listens() -> None:
    with pytest.raises(UnavailableError, match=r"127\.0\.0\.1:9 "):
        TFServingBackend("127.0.0.1:9", MODEL_NAME, timeout_s=1.0)


def test_tfserving_backend_reports_an_unknown_model(tf_serving: str) -> None:
    with pytest.raises(UnavailableError, match="NOT_FOUND"):
        TFServingBackend(tf_serving, "no-such-model", timeout_s=5.0)


def test_signature_survives_invalid_utf8_bytes(inprocess: InProcessBackend) -> None:
    """Regression: TF Serving passes raw bytes through; no byte sequence may fail the graph."""
    fn = tf.saved_model.load(str(inprocess.path)).signatures["serving_default"]
    out = fn(text=tf.constant([b"\xff\xfe\xfd", b"\xe4\xb8", b"", b"ok \xc3\x28 fine"]))
    probs = out["probabilities"].numpy()
    assert probs.shape == (4, 3)
    assert np.isfinite(probs).all()


# --- the gRPC service (each test runs once per backend) ----------------------------------


def test_classify_returns_label_probabilities_language_and_version(stub: Any) -> None:
    client, _ = stub
    resp = client.Classify(sentiment_pb2.ClassifyRequest(text="质量太差了，用了一天就坏了"))
    assert resp.label == 1  # SENTIMENT_LABEL_NEGATIVE
    assert set(resp.probabilities) == {"negative", "neutral", "positive"}
    assert sum(resp.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert resp.language == "zh"
    assert resp.model_version == "3"


def test_classify_batch_keeps_order_and_given_languages(stub: Any) -> None:
    client, _ = stub
    req = sentiment_pb2.ClassifyBatchRequest(
        requests=[
            sentiment_pb2.ClassifyRequest(text="love it, works perfectly, thank you"),
            sentiment_pb2.ClassifyRequest(text="the store opens at nine", language="en-US"),
            sentiment_pb2.ClassifyRequest(text="非常失望，不推荐购买"),
        ]
    )
    resp = client.ClassifyBatch(req)
    assert [r.label for r in resp.responses] == [3, 2, 1]
    assert [r.language for r in resp.responses] == ["en", "en", "zh"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (sentiment_pb2.ClassifyRequest(text=""), "text is empty"),
        (sentiment_pb2.ClassifyRequest(text="   "), "text is empty"),
        (sentiment_pb2.ClassifyRequest(text="a" * 401), "the limit is 400"),
        (sentiment_pb2.ClassifyRequest(text="ok", language="!!"), "BCP-47"),
    ],
)
def test_bad_input_is_invalid_argument(stub: Any, request_: Any, message: str) -> None:
    client, _ = stub
    with pytest.raises(grpc.RpcError) as info:
        client.Classify(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


def test_batch_over_the_limit_is_invalid_argument(stub: Any) -> None:
    client, _ = stub
    req = sentiment_pb2.ClassifyBatchRequest(
        requests=[sentiment_pb2.ClassifyRequest(text="fine")] * 9
    )
    with pytest.raises(grpc.RpcError) as info:
        client.ClassifyBatch(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit is 8" in (info.value.details() or "")


def test_invalid_utf8_on_the_wire_is_refused_and_the_server_keeps_serving(stub: Any) -> None:
    client, channel = stub
    raw = b"\x0a\x03a\xffb"  # ClassifyRequest{text = "a\xffb"}: not UTF-8
    call = channel.unary_unary(
        "/recsys.sentiment.v1.SentimentService/Classify",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(raw, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # was INTERNAL, from grpc
    assert "not a valid recsys.sentiment.v1.ClassifyRequest" in (info.value.details() or "")
    resp = client.Classify(sentiment_pb2.ClassifyRequest(text="awful service, I want a refund"))
    assert resp.label == 1


def test_health_and_reflection(stub: Any) -> None:
    _, channel = stub
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    [resp] = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")])))  # fmt: skip
    names = {s.name for s in resp.list_services_response.service}
    assert SERVICE_NAME in names


# --- the process: wiring, readiness, SIGTERM ------------------------------------------------


def test_service_process_serves_after_loading_and_stops_cleanly_on_sigterm(
    model_dir: Path, tmp_path: Path
) -> None:
    from recsys_tools.harness import Service, free_port, grpc_serving, wait_serving

    port = free_port()
    service = Service("sentiment", ["services.sentiment", "serve"], {
        "SENTIMENT_MODEL_DIR": str(model_dir),
        "GRACE_S": "2",
    }, log_path=tmp_path / "service.log", port=port,
        ready=lambda s: grpc_serving(s.target, timeout_s=2, service=SERVICE_NAME))  # fmt: skip
    service.start()
    channel = grpc.insecure_channel(service.target)
    try:
        wait_serving(service, 180)
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        resp = stub.Classify(sentiment_pb2.ClassifyRequest(text="非常失望，不推荐购买"), timeout=10)
        assert resp.label == 1 and resp.model_version == "3"
        assert service.stop(timeout_s=30) == 0
    finally:
        channel.close()
        service.stop(timeout_s=5)
    assert '"msg": "signal received; stopping"' in service.log_text()
