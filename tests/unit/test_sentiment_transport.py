"""The sentiment servicer's error mapping and metric labels, with a stand-in gRPC context.

Real-server behaviour is in tests/integration (test_sentiment_grpc.py,
test_malformed_requests.py, test_metrics_at_start.py); this checks the branches that are
hard to reach over a real connection: a bug in the backend, and the label mapping itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
import pytest
from prometheus_client import REGISTRY

from recsys.grpc_requests import MalformedRequest
from recsys.sentiment.v1 import sentiment_pb2
from services.sentiment import metrics
from services.sentiment.config import SentimentSettings
from services.sentiment.server import SentimentServicer


class AbortedError(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.code, self.details = code, details
        raise AbortedError


class BrokenPredictor:
    model_version = "broken"

    def predict_proba(self, texts: Sequence[str]) -> Any:
        raise ZeroDivisionError("secret")


def counted(method: str, code: str) -> float:
    labels = {"method": method, "code": code}
    return REGISTRY.get_sample_value("recsys_sentiment_requests_total", labels) or 0.0


def test_a_bug_is_internal_without_details_and_counted_as_internal() -> None:
    """Regression: the exception went to grpc (UNKNOWN, with its text) and was counted OK."""
    servicer = SentimentServicer(BrokenPredictor(), SentimentSettings())
    ctx = Context()
    before = counted("Classify", "INTERNAL")
    with pytest.raises(AbortedError):
        servicer.Classify(sentiment_pb2.ClassifyRequest(text="fine"), ctx)  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.INTERNAL and "secret" not in ctx.details
    assert counted("Classify", "INTERNAL") == before + 1


def test_a_body_that_does_not_parse_is_invalid_argument_and_counted() -> None:
    servicer = SentimentServicer(BrokenPredictor(), SentimentSettings())
    ctx = Context()
    before = counted("ClassifyBatch", "INVALID_ARGUMENT")
    request = MalformedRequest(
        "recsys.sentiment.v1.ClassifyBatchRequest", "Wire format was corrupt"
    )
    with pytest.raises(AbortedError):
        servicer.ClassifyBatch(request, ctx)  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ctx.details == (
        "request body is not a valid recsys.sentiment.v1.ClassifyBatchRequest: "
        "Wire format was corrupt"
    )
    assert counted("ClassifyBatch", "INVALID_ARGUMENT") == before + 1


@pytest.mark.parametrize(
    ("language", "label"),
    [("en", "en"), ("zh", "zh"), ("und", "und"), ("fr", "other"), ("tlh", "other"),
     ("qa", "other"), ("", "other")],
)  # fmt: skip
def test_the_language_label_is_the_models_languages_und_or_other(language: str, label: str) -> None:
    """Regression: every tag a caller sent became a label value (unbounded series)."""
    assert metrics.language_label(language) == label
