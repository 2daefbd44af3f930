"""Prometheus metrics of the recommender (exported on METRICS_PORT).

With several worker processes the parent serves one endpoint aggregating all workers
(prometheus_client's multiprocess mode, enabled by ``PROMETHEUS_MULTIPROC_DIR``, which
``__main__`` sets before any worker imports this module); gauges therefore declare how
they aggregate across processes.

Every series whose labels are known in advance is created at import, at zero (the end of
this module): a counter that first appears on its first increment is invisible to
``absent()`` alerts and dashboards until then, and its first ``rate()`` is lost. Only
``model_info`` waits for its label, the version of the first model loaded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from recsys.auth import REASONS as AUTH_REASONS
from recsys.grpc_status import ANSWERED_CODES
from recsys.recommender.v1 import recommender_pb2
from services.recommender.model import (
    SOURCE_FOLDIN,
    SOURCE_MODEL,
    SOURCE_POPULAR,
    SOURCE_TRENDING,
)

#: The RPCs of RecommenderService, as the request metrics label them.
METHODS = tuple(
    m.name for m in recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].methods
)
#: The methods whose answers can be degraded (SimilarItems reads no Redis state).
DEGRADED_METHODS = ("Recommend", "Explain", "BatchRecommend")
RELOAD_OK, RELOAD_FAILED = "ok", "failed"

REQUESTS = Counter(
    "recsys_recommender_requests_total",
    "Finished RPCs by method and gRPC status code.",
    ["method", "code"],
)
LATENCY = Histogram(
    "recsys_recommender_request_seconds",
    "Server-side handling time per RPC, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DEGRADED = Counter(
    "recsys_recommender_degraded_total",
    "Answers given from the model alone because Redis was unreachable, by method.",
    ["method"],
)
SOURCES = Counter(
    "recsys_recommender_results_total",
    "Recommend answers by the path that produced them (foldin, model, trending, popular).",
    ["source"],
)
MODEL_INFO = Gauge(
    "recsys_recommender_model_info",
    "1 for the model version currently served (0 for versions swapped out).",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_ITEMS = Gauge(
    "recsys_recommender_model_items",
    "Catalog size of the served model.",
    multiprocess_mode="livemax",
)
RELOADS = Counter(
    "recsys_recommender_model_reloads_total",
    "Model reload attempts by result (ok, failed).",
    ["result"],
)
HTTP_REQUESTS = Counter(
    "recsys_recommender_http_requests_total",
    "Finished HTTP/JSON calls by method and the gRPC status code their HTTP status maps from.",
    ["method", "code"],
)
HTTP_LATENCY = Histogram(
    "recsys_recommender_http_request_seconds",
    "Server-side handling time per HTTP/JSON call (JSON parse to JSON written), by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
AUTH_DENIED = Counter(
    "recsys_recommender_auth_denied_total",
    "Calls refused by authentication or authorisation, by method and reason "
    "(missing, malformed, unknown: UNAUTHENTICATED; forbidden: PERMISSION_DENIED).",
    ["method", "reason"],
)
REDIS_UP = Gauge(
    "recsys_recommender_redis_up",
    "1 when the last Redis call of every worker succeeded (min over workers).",
    multiprocess_mode="livemin",
)


for _method in METHODS:
    LATENCY.labels(_method)
    HTTP_LATENCY.labels(_method)
    for _code in ANSWERED_CODES:
        REQUESTS.labels(_method, _code.name)
        HTTP_REQUESTS.labels(_method, _code.name)
    for _reason in AUTH_REASONS:
        AUTH_DENIED.labels(_method, _reason)
for _method in DEGRADED_METHODS:
    DEGRADED.labels(_method)
for _source in (SOURCE_FOLDIN, SOURCE_MODEL, SOURCE_TRENDING, SOURCE_POPULAR):
    SOURCES.labels(_source)
for _result in (RELOAD_OK, RELOAD_FAILED):
    RELOADS.labels(_result)
