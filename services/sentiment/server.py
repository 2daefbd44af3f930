"""The gRPC transport: SentimentService over the pure core, health and reflection.

Thin on purpose: it turns protobuf requests into core calls and domain errors
into status codes; everything worth testing without a network lives in
``services.sentiment.core``. :func:`create_server` returns an unstarted server
so tests and ``__main__`` decide when it starts and stops. Requests are parsed by
``recsys.grpc_requests``, so a body that does not parse reaches ``_call`` and is answered
INVALID_ARGUMENT there, like any other bad input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

from recsys.auth import Policy
from recsys.errors import UnavailableError
from recsys.grpc_auth import auth_refusal
from recsys.grpc_requests import LogThrottle, add_servicer, error_refusal, refusal
from recsys.health import HealthState, add_health_and_reflection
from recsys.ports import bind_failed, ensure_port_free
from recsys.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from services.sentiment import metrics
from services.sentiment.config import SentimentSettings
from services.sentiment.core import Prediction, Predictor, Probabilities, TextRequest, classify

SERVICE = sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"]
SERVICE_NAME = SERVICE.full_name
T = TypeVar("T")

log = logging.getLogger(__name__)
# A client that sends bodies that do not parse usually sends many: a line per method per 10 s.
_malformed_log = LogThrottle(log, interval_s=10.0)


class SwappablePredictor:
    """Forwards to the current backend; lets the server start (NOT_SERVING) before the
    model has loaded, and is the one place a hot model swap would go."""

    def __init__(self, predictor: Predictor | None = None) -> None:
        self._current = predictor

    def set(self, predictor: Predictor) -> None:
        self._current = predictor

    @property
    def model_version(self) -> str:
        return self._current.model_version if self._current is not None else ""

    def predict_proba(self, texts: Sequence[str]) -> Probabilities:
        current = self._current
        if current is None:
            raise UnavailableError("the sentiment model is still loading; retry shortly")
        return current.predict_proba(texts)


def to_response(prediction: Prediction) -> sentiment_pb2.ClassifyResponse:
    return sentiment_pb2.ClassifyResponse(
        label=prediction.proto_label,  # type: ignore[arg-type]
        probabilities=prediction.probability_map(),
        language=prediction.language,
        model_version=prediction.model_version,
    )


def _text_request(req: sentiment_pb2.ClassifyRequest) -> TextRequest:
    return TextRequest(req.text, req.language if req.HasField("language") else None)


class SentimentServicer(sentiment_pb2_grpc.SentimentServiceServicer):
    """``auth`` is the credentials policy (None: ``AUTH_MODE=off``)."""

    def __init__(
        self, predictor: Predictor, settings: SentimentSettings, auth: Policy | None = None
    ) -> None:
        self.predictor = predictor
        self.settings = settings
        self.auth = auth
        self._full_names = {m.name: f"{SERVICE_NAME}/{m.name}" for m in SERVICE.methods}

    def _call(
        self, method: str, request: object, context: grpc.ServicerContext, fn: Callable[[], T]
    ) -> T:
        """Run ``fn``; map its errors to a status, and count every answer with its code.

        A body that did not parse (``request`` is a :class:`MalformedRequest`) is
        INVALID_ARGUMENT, logged at most once per 10 s per method. An error that is not a
        RecsysError is a bug: INTERNAL without details, logged with its traceback (left to
        grpc it would be UNKNOWN with the exception's text, and counted here as OK). A call
        the credentials policy refuses is answered before anything else (``recsys.grpc_auth``).
        """
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            refused = None
            if self.auth is not None:
                full_method = self._full_names[method]
                refused = auth_refusal(self.auth, method, full_method, context, metrics.AUTH_DENIED)
            if refused is None:
                refused = refusal(method, request, _malformed_log)
            if refused is None:
                try:
                    return fn()
                except Exception as exc:
                    refused = error_refusal(method, exc, log)
            code, message = refused
            context.abort(code, message)
            raise AssertionError("context.abort returned")
        finally:
            metrics.REQUESTS.labels(method, code.name).inc()
            metrics.REQUEST_SECONDS.labels(method).observe(time.perf_counter() - started)

    def _classify(self, requests: Sequence[TextRequest]) -> list[Prediction]:
        predictions = classify(
            self.predictor,
            requests,
            max_chars=self.settings.max_text_chars,
            max_batch=self.settings.max_batch,
        )
        for p in predictions:
            metrics.CLASSIFIED.labels(p.label_name, metrics.language_label(p.language)).inc()
        return predictions

    def Classify(  # noqa: N802 (gRPC method name)
        self, request: sentiment_pb2.ClassifyRequest, context: grpc.ServicerContext
    ) -> sentiment_pb2.ClassifyResponse:
        return self._call(
            "Classify",
            request,
            context,
            lambda: to_response(self._classify([_text_request(request)])[0]),
        )

    def ClassifyBatch(  # noqa: N802 (gRPC method name)
        self, request: sentiment_pb2.ClassifyBatchRequest, context: grpc.ServicerContext
    ) -> sentiment_pb2.ClassifyBatchResponse:
        def run() -> sentiment_pb2.ClassifyBatchResponse:
            preds = self._classify([_text_request(r) for r in request.requests])
            return sentiment_pb2.ClassifyBatchResponse(responses=[to_response(p) for p in preds])

        return self._call("ClassifyBatch", request, context, run)


def create_server(
    predictor: Predictor,
    settings: SentimentSettings,
    health: HealthState,
    *,
    port: int | None = None,
    host: str = "0.0.0.0",
    auth: Policy | None = None,
) -> tuple[grpc.Server, int]:
    """An unstarted server with SentimentService, health and reflection; returns the bound port.

    ``auth`` is the credentials policy (None: every caller may call every method).
    Incoming messages are capped at what ``max_batch`` texts of ``max_text_chars``
    (4 bytes each in UTF-8) can need, so an oversized request is refused by gRPC
    before it is parsed.
    """
    max_message = max(4 * 1024 * 1024, settings.max_batch * settings.max_text_chars * 4 + 65536)
    # No SO_REUSEPORT (gRPC's Python default turns it on): one process per port, so a port
    # another process holds is refused with a ConfigError naming GRPC_PORT, never shared.
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.so_reuseport", 0),
    ]
    bind_port = settings.grpc_port if port is None else port
    ensure_port_free(host, bind_port, "GRPC_PORT")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_workers), options=options
    )
    add_servicer(server, SentimentServicer(predictor, settings, auth), SERVICE)
    add_health_and_reflection(server, health, [SERVICE_NAME])
    try:
        bound = server.add_insecure_port(f"{host}:{bind_port}")
    except RuntimeError as exc:
        raise bind_failed(host, bind_port, "GRPC_PORT", exc) from None
    return server, bound
