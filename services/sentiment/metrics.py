"""Prometheus metrics of the sentiment service (exported on METRICS_PORT).

The series whose labels are known in advance (methods and codes, labels and languages,
dead-letter reasons) are created at import, at zero (the end of this module): a counter
that first appears on its first increment is invisible to ``absent()`` alerts and
dashboards until then. The consume loop (``recsys.consume``) does the same for the
dependencies and restart reasons it knows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from recsys.auth import REASONS as AUTH_REASONS
from recsys.grpc_status import ANSWERED_CODES
from recsys.sentiment.v1 import sentiment_pb2
from services.sentiment.core import LABELS, LANG_EN, LANG_UNDETERMINED, LANG_ZH, REASON_CODES

#: The RPCs of SentimentService, as the request metrics label them.
METHODS = tuple(
    m.name for m in sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].methods
)
#: The ``language`` label's values: the languages the model was trained on, ``und`` for a
#: text without letters (detection's answer), and ``other`` for every tag a caller may
#: send: the label is bounded, whatever the callers send.
LANGUAGES = (LANG_EN, LANG_ZH, LANG_UNDETERMINED)
OTHER_LANGUAGE = "other"


def language_label(language: str) -> str:
    """The ``language`` label for a prediction's language (the response keeps the tag)."""
    return language if language in LANGUAGES else OTHER_LANGUAGE


REQUESTS = Counter(
    "recsys_sentiment_requests_total",
    "gRPC calls, by method and status code.",
    ["method", "code"],
)
REQUEST_SECONDS = Histogram(
    "recsys_sentiment_request_seconds",
    "gRPC handler time, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
AUTH_DENIED = Counter(
    "recsys_sentiment_auth_denied_total",
    "Calls refused by authentication or authorisation, by method and reason "
    "(missing, malformed, unknown: UNAUTHENTICATED; forbidden: PERMISSION_DENIED).",
    ["method", "reason"],
)
CLASSIFIED = Counter(
    "recsys_sentiment_classified_total",
    "Texts classified (gRPC and Kafka), by label and language.",
    ["label", "language"],
)
FEEDBACK_SCORED = Counter(
    "recsys_sentiment_feedback_scored_total",
    "Feedback records scored, written to Redis and produced to the output topic.",
)
SUPPRESSED = Counter(
    "recsys_sentiment_suppressions_total",
    "Items put in a user's suppression set after negative feedback.",
)
DEAD_LETTERED = Counter(
    "recsys_sentiment_dead_lettered_total",
    "Feedback records sent to the dead-letter topic, by reason code.",
    ["reason"],
)
BATCH_SECONDS = Histogram(
    "recsys_sentiment_batch_seconds",
    "Time from a poll returning a batch to its offsets being committed.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DEPENDENCY_ERRORS = Counter(
    "recsys_sentiment_dependency_errors_total",
    "Failed calls to a dependency that were retried, by dependency.",
    ["dependency"],
)
DEGRADED = Gauge(
    "recsys_sentiment_degraded",
    "1 while Redis, Kafka or the model backend is failing and the consumer is backing off.",
)
CONSUMER_RESTARTS = Counter(
    "recsys_sentiment_consumer_restarts_total",
    "Kafka consumers closed and rebuilt by the stall watchdog, by reason (join, no_progress).",
    ["reason"],
)


for _method in METHODS:
    REQUEST_SECONDS.labels(_method)
    for _code in ANSWERED_CODES:
        REQUESTS.labels(_method, _code.name)
    for _reason in AUTH_REASONS:
        AUTH_DENIED.labels(_method, _reason)
for _label in LABELS:
    for _language in (*LANGUAGES, OTHER_LANGUAGE):
        CLASSIFIED.labels(_label, _language)
for _reason in REASON_CODES:
    DEAD_LETTERED.labels(_reason)
