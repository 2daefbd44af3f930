"""The console's pages: Starlette routes, Jinja2 templates, Chart.js (vendored from npm).

Every figure comes from a service's public surface: the recommender's gRPC API (Recommend,
Explain, SimilarItems), the feature store (recent events, suppressions, sentiment,
trending, through ``recsys.store``) and the services' Prometheus endpoints. Endpoints are
plain functions, which Starlette runs on its thread pool, since the store and gRPC calls
they make are blocking. A service that does not answer is shown as down on the page rather
than failing it.

Live parts poll: the user page's recommendations every ``LIVE_POLL_MS`` (a click reaches
the page within that plus the pipeline's own latency; docs/console.md), the system page
every second.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from recsys.errors import RecsysError
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
from recsys.store import FeatureStore
from services.console import metrics
from services.console.auth import authorised
from services.console.config import ConsoleSettings
from services.console.core import DeadLetterMemory, Scrape, parse_metrics, system_view
from services.console.core import trending_position as rank_of

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LIVE_POLL_MS = 250
REASONS = {
    pb.REASON_COLLABORATIVE: "collaborative: users with your history liked it",
    pb.REASON_TRENDING: "trending now",
    pb.REASON_CONTENT: "similar in content to what you viewed",
    pb.REASON_POPULARITY: "popular overall",
    pb.REASON_UNSPECIFIED: "unspecified",
}


def fetch_metrics(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return str(reply.read().decode())


@dataclass
class Scraper:
    """The latest and previous scrape of each service (what ``rate()`` needs), no more."""

    targets: tuple[tuple[str, str], ...]
    timeout_s: float
    fetch: Callable[[str, float], str] = fetch_metrics
    latest: dict[str, Scrape] = field(default_factory=dict)
    previous: dict[str, Scrape] = field(default_factory=dict)
    memory: DeadLetterMemory = field(default_factory=DeadLetterMemory)
    lock: threading.Lock = field(default_factory=threading.Lock)
    min_interval_s: float = 0.5

    def view(self) -> dict[str, Any]:
        with self.lock:
            now = time.time()
            stale = not self.latest or now - max(s.at for s in self.latest.values()) \
                >= self.min_interval_s  # fmt: skip
            if stale:
                fresh = {name: self._scrape(name, url, now) for name, url in self.targets}
                self.previous, self.latest = self.latest, fresh
            return system_view(self.latest, self.previous, self.memory)

    def _scrape(self, name: str, url: str, now: float) -> Scrape:
        try:
            return Scrape(name, now, parse_metrics(self.fetch(url, self.timeout_s)))
        except Exception as exc:  # down, refused, garbled: shown as down, never a 500
            return Scrape(name, now, {}, error=f"{type(exc).__name__}: {exc}")


@dataclass
class Backends:
    store: FeatureStore
    recommender: pb_grpc.RecommenderServiceStub
    scraper: Scraper
    #: sent with every recommender call (``CONSOLE_RECOMMENDER_TOKEN``); empty: none
    metadata: tuple[tuple[str, str], ...] = ()


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'ERROR'}: {details}"


def user_view(settings: ConsoleSettings, b: Backends, user_id: str) -> dict[str, Any]:
    """Everything the user page shows; each source that fails is reported, not raised."""
    out: dict[str, Any] = {"user_id": user_id, "errors": []}
    try:
        state = b.store.get_user_state(user_id)
        out["recent"] = [{"item": r.item, "type": r.type, "weight": r.weight,
                          "ts": r.ts, "age_s": max(0.0, time.time() - r.ts)}
                         for r in state.recent]  # fmt: skip
        out["suppressed"] = sorted(state.suppressed)
        out["forgotten"] = state.forgotten
        sentiment = b.store.get_sentiment(user_id)
        out["sentiment"] = None if sentiment is None else {
            "avg": sentiment.avg, "n": sentiment.n, "ts": sentiment.ts}  # fmt: skip
    except RecsysError as exc:
        out["errors"].append(f"feature store: {exc}")
    try:
        answer = b.recommender.Recommend(
            pb.RecommendRequest(user_id=user_id, k=settings.k),
            timeout=settings.rpc_timeout_s,
            metadata=b.metadata,
        )
        explains = [
            b.recommender.Explain.future(
                pb.ExplainRequest(user_id=user_id, item_id=i.item_id, k=3),
                timeout=settings.rpc_timeout_s,
                metadata=b.metadata,
            )
            for i in answer.items
        ]
        recs = []
        for item, future in zip(answer.items, explains, strict=True):
            try:
                why = future.result()
                contributions = [(c.item_id, c.weight) for c in why.contributions]
            except grpc.RpcError:
                contributions = []
            recs.append({"item": item.item_id, "score": item.score,
                         "reason": REASONS.get(item.reason, str(item.reason)),
                         "contributions": contributions})  # fmt: skip
        out["recommendations"] = recs
        out["model_version"] = answer.model_version
        out["degraded"] = answer.degraded
    except grpc.RpcError as exc:
        out["errors"].append(f"recommender: {_rpc_error(exc)}")
    return out


def create_app(settings: ConsoleSettings, backends: Backends) -> Starlette:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]))  # fmt: skip
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.globals["LIVE_POLL_MS"] = LIVE_POLL_MS

    def page(name: str, template: str, build: Callable[[Request], dict[str, Any]]
             ) -> Callable[[Request], Response]:  # fmt: skip
        def handle(request: Request) -> Response:
            started = time.perf_counter()
            outcome = "ok"
            try:
                context = build(request)
                return HTMLResponse(env.get_template(template).render(**context))
            except Exception:
                outcome = "error"
                log.exception("console page failed", extra={"page": name})
                return HTMLResponse("<h1>console error</h1><p>the console log has details</p>",
                                    status_code=500)  # fmt: skip
            finally:
                metrics.REQUESTS.labels(name, outcome).inc()
                metrics.RENDER.labels(name).observe(time.perf_counter() - started)

        return handle

    def user(request: Request) -> dict[str, Any]:
        return {"u": user_view(settings, backends, request.path_params["user_id"]),
                "actions": bool(settings.token)}  # fmt: skip

    def why(request: Request) -> dict[str, Any]:
        user_id, item_id = request.path_params["user_id"], request.path_params["item_id"]
        out: dict[str, Any] = {"user_id": user_id, "item_id": item_id, "error": ""}
        try:
            answer = backends.recommender.Explain(
                pb.ExplainRequest(user_id=user_id, item_id=item_id),
                timeout=settings.rpc_timeout_s, metadata=backends.metadata)  # fmt: skip
            out["score"] = answer.score
            out["contributions"] = [(c.item_id, c.weight) for c in answer.contributions]
            out["model_version"] = answer.model_version
            out["sentiment"] = (answer.sentiment_average
                                if answer.HasField("sentiment_average") else None)  # fmt: skip
        except grpc.RpcError as exc:
            out["error"] = _rpc_error(exc)
        return out

    def item(request: Request) -> dict[str, Any]:
        item_id = request.path_params["item_id"]
        out: dict[str, Any] = {"item_id": item_id, "errors": [], "similar": []}
        try:
            answer = backends.recommender.SimilarItems(
                pb.SimilarItemsRequest(item_id=item_id, k=settings.k),
                timeout=settings.rpc_timeout_s, metadata=backends.metadata)  # fmt: skip
            out["similar"] = [(i.item_id, i.score) for i in answer.items]
            out["model_version"] = answer.model_version
        except grpc.RpcError as exc:
            out["errors"].append(f"recommender: {_rpc_error(exc)}")
        try:
            trending = backends.store.trending(settings.trending_depth)
            out["trending_rank"] = rank_of(trending, item_id)
            out["trending_depth"] = settings.trending_depth
            out["trending_score"] = dict(trending).get(item_id)
        except RecsysError as exc:
            out["errors"].append(f"feature store: {exc}")
        return out

    def system(_: Request) -> dict[str, Any]:
        return {"view": backends.scraper.view()}

    def system_api(_: Request) -> Response:
        started = time.perf_counter()
        try:
            return JSONResponse(backends.scraper.view())
        finally:
            metrics.REQUESTS.labels("system_api", "ok").inc()
            metrics.RENDER.labels("system_api").observe(time.perf_counter() - started)

    def action(request: Request, run: Callable[[], Mapping[str, Any]]) -> Response:
        if not authorised(request.headers, settings.token):
            metrics.REQUESTS.labels("action", "refused").inc()
            status, message = (
                (403, "actions are disabled: CONSOLE_TOKEN is not set")
                if not settings.token
                else (401, "an action needs Authorization: Bearer <token>")
            )
            return JSONResponse({"error": {"code": status, "message": message,
                                           "status": "PERMISSION_DENIED" if status == 403
                                           else "UNAUTHENTICATED"}},
                                status_code=status)  # fmt: skip
        try:
            result = run()
        except RecsysError as exc:
            metrics.REQUESTS.labels("action", "error").inc()
            return JSONResponse({"error": {"code": 503, "status": "UNAVAILABLE",
                                           "message": str(exc)}}, status_code=503)  # fmt: skip
        metrics.REQUESTS.labels("action", "ok").inc()
        log.info("console action", extra={"path": request.url.path, **result})
        return JSONResponse(dict(result))

    def forget(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        return action(
            request,
            lambda: {"user_id": user_id, "keys_deleted": backends.store.forget_user(user_id)},
        )

    def lift(request: Request) -> Response:
        user_id, item_id = request.path_params["user_id"], request.path_params["item_id"]
        return action(request, lambda: {
            "user_id": user_id, "item_id": item_id,
            "lifted": backends.store.unsuppress(user_id, item_id)})  # fmt: skip

    def home(request: Request) -> Response:
        user_id = request.query_params.get("user", "").strip()
        item_id = request.query_params.get("item", "").strip()
        if user_id:
            return RedirectResponse(f"/users/{quote(user_id, safe='')}", status_code=303)
        if item_id:
            return RedirectResponse(f"/items/{quote(item_id, safe='')}", status_code=303)
        return RedirectResponse("/system", status_code=303)

    def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/system", page("system", "system.html", system)),
        Route("/api/system", system_api),
        Route("/users/{user_id}", page("user", "user.html", user)),
        Route("/users/{user_id}/live", page("user_live", "user_live.html", user)),
        Route("/users/{user_id}/why/{item_id}", page("why", "why.html", why)),
        Route("/items/{item_id}", page("item", "item.html", item)),
        Route("/api/users/{user_id}:forget", forget, methods=["POST"]),
        Route("/api/users/{user_id}/suppressions/{item_id}:lift", lift, methods=["POST"]),
        Mount("/static", CachedStatic(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


class CachedStatic(StaticFiles):
    """The vendored Chart.js and the stylesheet change only with a release: a browser may
    keep them for a day instead of asking again on every page."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response
