"""The gRPC transport of the recommender: messages ↔ domain types, domain errors → status codes.

Nothing here decides what to recommend (that is ``service.py``). The servicer converts the
request, calls the service, converts the answer, and maps errors in one place: a
:class:`~recsys.errors.RecsysError` becomes ``context.abort(grpc_code(err), message)``; anything
else is a bug, logged with its traceback and answered ``INTERNAL`` without leaking details.

The server is ``grpc.aio`` on one event loop per process, and the RPC methods are
coroutines that run the (synchronous, CPU-bound) service call inline on that loop. A request
is a fraction of a millisecond of Python: running it on the loop thread costs nothing in
concurrency (the GIL serialises a process anyway) and saves what the threaded server spent
around it: the hand-off from gRPC's polling thread to a pool thread and back, and the pool's
threads queueing for the GIL (docs/recommender.md, "Concurrency model"). Measured against the
threaded server side by side: a lower half-load tail, with the no-op handler and with
Recommend, and less server CPU per Recommend (docs/benchmarks.md, History, "`grpc.aio`
instead of the thread pool"). Health is the stock servicer's state served on the loop
(``recsys.health``: a Watch must hold no thread); reflection, synchronous, runs its few
calls on a small thread pool (``GRPC_THREADS``).

:func:`create_server` returns an unstarted :class:`LoopServer` (health, reflection, optional
TLS) so tests and ``__main__`` start and stop it themselves from ordinary threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
import grpc.aio

from recsys.auth import Policy
from recsys.errors import UnavailableError
from recsys.grpc_auth import auth_refusal
from recsys.grpc_requests import LogThrottle, add_servicer, error_refusal, refusal
from recsys.grpc_status import grpc_code
from recsys.health import HealthState, add_health_and_reflection
from recsys.ports import bind_failed
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
from services.recommender import metrics
from services.recommender.config import RecommenderSettings
from services.recommender.service import (
    REASON_COLLABORATIVE,
    REASON_CONTENT,
    REASON_POPULARITY,
    REASON_TRENDING,
    Filters,
    RecommenderService,
    RecommendQuery,
    RecommendResult,
    ScoredItem,
    SimilarQuery,
    SimilarResult,
    Widget,
)

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["RecommenderService"]
SERVICE_NAME: str = SERVICE.full_name

REASONS = {
    REASON_COLLABORATIVE: pb.REASON_COLLABORATIVE,
    REASON_TRENDING: pb.REASON_TRENDING,
    REASON_CONTENT: pb.REASON_CONTENT,
    REASON_POPULARITY: pb.REASON_POPULARITY,
}

T = TypeVar("T")

# A client that sends bodies that do not parse usually sends many: a line per method per 10 s.
_malformed_log = LogThrottle(log, interval_s=10.0)


# ------------------------------------------------------------------------ conversions
def filters_from_proto(msg: pb.Filters) -> Filters:
    return Filters(tuple(msg.exclude_item_ids), bool(msg.include_seen), tuple(msg.categories))


def recommend_query(msg: pb.RecommendRequest) -> RecommendQuery:
    return RecommendQuery(msg.user_id, int(msg.k), filters_from_proto(msg.filters))


def similar_query(msg: pb.SimilarItemsRequest) -> SimilarQuery:
    return SimilarQuery(msg.item_id, int(msg.k), filters_from_proto(msg.filters))


def recommend_response(result: RecommendResult) -> pb.RecommendResponse:
    """Items added in place (``items.add``): building each ScoredItem message first and
    then copying it into the response cost half as much again (43.6 vs 27.7 µs for ten
    items; docs/benchmarks.md, History, "Approximate candidate retrieval and the Recommend
    margin")."""
    response = pb.RecommendResponse(
        user_id=result.user_id, model_version=result.model_version, degraded=result.degraded
    )
    add = response.items.add
    for item in result.items:
        add(item_id=item.item_id, score=item.score, reason=REASONS[item.reason])
    return response


def similar_response(result: SimilarResult) -> pb.SimilarItemsResponse:
    return pb.SimilarItemsResponse(
        item_id=result.item_id,
        items=_items(result.items),
        model_version=result.model_version,
    )


def _items(items: list[ScoredItem]) -> list[pb.ScoredItem]:
    return [
        pb.ScoredItem(item_id=i.item_id, score=i.score, reason=REASONS[i.reason]) for i in items
    ]


def widget_from_proto(msg: pb.WidgetRequest) -> Widget:
    kind = msg.WhichOneof("request")
    if kind == "recommend":
        return Widget(msg.widget_id, recommend_query(msg.recommend))
    if kind == "similar_items":
        return Widget(msg.widget_id, similar_query(msg.similar_items))
    return Widget(msg.widget_id, None)


# --------------------------------------------------------------------------- servicer
class RecommenderServicer(pb_grpc.RecommenderServiceServicer):
    """Holds the service once it is ready; until then every call is ``UNAVAILABLE``.

    In ``noop`` mode Recommend answers an empty list without touching the model or Redis:
    the benchmark's baseline for what the server stack (gRPC, protobuf, event loop, metrics)
    costs on its own. ``auth`` is the credentials policy (None: ``AUTH_MODE=off``).
    """

    def __init__(
        self,
        service: RecommenderService | None = None,
        *,
        noop: bool = False,
        auth: Policy | None = None,
    ) -> None:
        self.service = service
        self.noop = noop
        self.auth = auth
        self._full_names = {m.name: f"{SERVICE_NAME}/{m.name}" for m in SERVICE.methods}

    def _service(self) -> RecommenderService:
        service = self.service
        if service is None:
            raise UnavailableError("the recommender is starting: no model loaded yet")
        return service

    async def _call(
        self,
        method: str,
        request: object,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[], T],
    ) -> T:
        """Run ``work`` inline on the loop; map its errors (and an expired deadline) to a status.

        A body that did not parse (``request`` is a :class:`MalformedRequest`, see
        ``recsys.grpc_requests``) is INVALID_ARGUMENT, counted and logged at most once per
        10 s per method. A request that waited in the loop's queue past its deadline is
        answered DEADLINE_EXCEEDED without doing the work: the caller has given up on it.
        A call the credentials policy refuses is answered before either (``recsys.grpc_auth``).
        """
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            refused = None
            if self.auth is not None:
                full_method = self._full_names[method]
                refused = auth_refusal(self.auth, method, full_method, context, metrics.AUTH_DENIED)
            if refused is None:
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                refused = refusal(method, request, _malformed_log, expired=expired)
            if refused is None:
                try:
                    return work()
                except Exception as exc:
                    refused = error_refusal(method, exc, log)
            code, message = refused
            await context.abort(code, message)  # raises
            raise AssertionError("context.abort returned")
        finally:
            metrics.REQUESTS.labels(method, code.name).inc()
            metrics.LATENCY.labels(method).observe(time.perf_counter() - started)

    def _recommend(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
        if self.noop:
            return pb.RecommendResponse(user_id=request.user_id)
        result = self._service().recommend(recommend_query(request))
        _count(result, "Recommend")
        return recommend_response(result)

    async def Recommend(  # noqa: N802 - the gRPC method name
        self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecommendResponse:
        return await self._call("Recommend", request, context, lambda: self._recommend(request))

    async def SimilarItems(  # noqa: N802
        self, request: pb.SimilarItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SimilarItemsResponse:
        return await self._call(
            "SimilarItems",
            request,
            context,
            lambda: similar_response(self._service().similar_items(similar_query(request))),
        )

    def _explain(self, request: pb.ExplainRequest) -> pb.ExplainResponse:
        result = self._service().explain(request.user_id, request.item_id, int(request.k))
        if result.degraded:
            metrics.DEGRADED.labels("Explain").inc()
        return pb.ExplainResponse(
            user_id=result.user_id,
            item_id=result.item_id,
            score=result.score,
            contributions=[pb.Contribution(item_id=i, weight=w) for i, w in result.contributions],
            model_version=result.model_version,
            sentiment_average=result.sentiment,  # None leaves the optional field unset
        )

    async def Explain(  # noqa: N802
        self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExplainResponse:
        return await self._call("Explain", request, context, lambda: self._explain(request))

    def _batch(self, request: pb.BatchRecommendRequest) -> pb.BatchRecommendResponse:
        results = self._service().batch([widget_from_proto(w) for w in request.widgets])
        out = pb.BatchRecommendResponse()
        for r in results:
            w = out.widgets.add(widget_id=r.widget_id)
            if r.error is not None:
                w.error_code = grpc_code(r.error).value[0]
                w.error_message = str(r.error)
            elif isinstance(r.result, RecommendResult):
                _count(r.result, "BatchRecommend")
                w.recommend.CopyFrom(recommend_response(r.result))
            elif isinstance(r.result, SimilarResult):
                w.similar_items.CopyFrom(similar_response(r.result))
        return out

    async def BatchRecommend(  # noqa: N802
        self, request: pb.BatchRecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchRecommendResponse:
        return await self._call("BatchRecommend", request, context, lambda: self._batch(request))


_redis_up: list[int] = [-1]  # the value last written to the REDIS_UP gauge


def _count(result: RecommendResult, method: str) -> None:
    metrics.SOURCES.labels(result.source or "unknown").inc()
    if result.degraded:
        metrics.DEGRADED.labels(method).inc()
    up = 0 if result.degraded else 1
    if up != _redis_up[0]:  # a gauge write per request costs more than the comparison
        metrics.REDIS_UP.set(up)
        _redis_up[0] = up


# ----------------------------------------------------------------------------- factory
def server_credentials(settings: RecommenderSettings) -> grpc.ServerCredentials | None:
    if settings.tls is None:
        return None
    cert, key, client_ca = settings.tls.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class LoopServer:
    """A ``grpc.aio`` server on an event loop of its own thread, with a synchronous surface.

    ``__main__`` and the tests drive servers from ordinary threads (the main thread waits
    for SIGTERM; the model watcher has its own thread), so the loop runs in a thread named
    ``grpc-loop`` and :meth:`start` / :meth:`stop` block until the loop has done them. The
    aio server binds itself to the loop it is created on, hence ``build`` runs there.
    """

    def __init__(self, build: Callable[[], Coroutine[Any, Any, tuple[grpc.aio.Server, int]]]
                 ) -> None:  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="grpc-loop", daemon=True)
        self._thread.start()
        try:
            self.server, self.port = self._wait(build())
        except BaseException:
            self._close_loop()
            raise

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self) -> None:
        self._wait(self.server.start())

    def stop(self, grace_s: float | None) -> None:
        """Refuse new RPCs, let those in flight finish for up to ``grace_s`` seconds (then
        cancel them), and end the loop thread. Idempotent."""
        if self.loop.is_closed():
            return
        try:
            self._wait(self.server.stop(grace_s))
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def connection_age_options(settings: RecommenderSettings) -> list[tuple[str, int]]:
    """GOAWAY after ``MAX_CONNECTION_AGE_S``; calls in flight then get ``GRACE_S`` to finish."""
    if settings.max_connection_age_s <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_s * 1000)),
    ]


def create_server(
    settings: RecommenderSettings,
    servicer: RecommenderServicer,
    health: HealthState,
    *,
    port: int | None = None,
    options: list[tuple[str, Any]] | None = None,
) -> tuple[LoopServer, int]:
    """An unstarted server on ``settings.host``:``port`` (default ``settings.grpc_port``).

    ``SO_REUSEPORT`` is on so that several worker processes can bind the same port and the
    kernel spreads connections over them (the concurrency model, see docs/recommender.md).
    It would also let this server join a port that another process holds, so ``main``
    checks the port before any worker binds (``recsys.ports.ensure_port_free``).
    """
    opts: list[tuple[str, Any]] = [("grpc.so_reuseport", 1), *connection_age_options(settings)]
    opts += options or []
    bind_port = settings.grpc_port if port is None else port
    address = f"{settings.host}:{bind_port}"
    creds = server_credentials(settings)  # read here: a bad file fails before any thread starts

    async def build() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            migration_thread_pool=futures.ThreadPoolExecutor(
                max_workers=settings.threads, thread_name_prefix="rpc-sync"
            ),
            options=opts,
        )
        add_servicer(server, servicer, SERVICE)  # a body that does not parse reaches _call
        add_health_and_reflection(server, health, [SERVICE_NAME])
        try:
            bound = (
                server.add_secure_port(address, creds)
                if creds is not None
                else server.add_insecure_port(address)
            )
        except RuntimeError as exc:  # gRPC's failed bind: say which variable to change
            raise bind_failed(settings.host, bind_port, "GRPC_PORT", exc) from None
        return server, bound

    server = LoopServer(build)
    return server, server.port
