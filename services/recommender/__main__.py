"""``recsys-recommender`` / ``python -m services.recommender``: wiring, workers, shutdown.

Concurrency model: ``WORKERS`` processes (default: one per CPU), each a complete server —
its own ``grpc.aio`` server on one event-loop thread (requests run inline on the loop, no
handler thread pool; see ``server.py``), Redis connection and memory-mapped model — all
bound to the same port with ``SO_REUSEPORT``, so the kernel spreads incoming connections
over them. A request is mostly Python (protobuf, the fold-in bookkeeping), which one
process runs on one core at a time whatever its thread count; processes are what use the
second core. The model's arrays
are memory maps of the same files, so N workers share one copy in the page cache. The
parent process starts the workers, serves the aggregated metrics, restarts a worker that
dies, and forwards SIGTERM. With ``WORKERS=1`` the server runs in this process.

Startup (per worker): the gRPC server starts first with health NOT_SERVING (probes see the
process), then the model is loaded and Redis pinged; only then SERVING. SIGTERM: health →
NOT_SERVING for good and the health Watch streams ended (``HealthState.shutdown``: an open
one would hold the drain and the exit), ``server.stop(GRACE_S)`` lets in-flight requests
finish, then the model watcher and the Redis pool close.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from typing import Any

from recsys.auth import load_auth_settings
from recsys.errors import ConfigError, PermissionDeniedError, RecsysError
from recsys.health import HealthState
from recsys.log import configure_logging
from recsys.metrics import start_metrics_server
from recsys.ports import ensure_port_free
from recsys.runtime import settle_heap
from recsys.settings import redacted_url
from recsys.shutdown import install_stop_handlers
from recsys.store import FeatureStore, StoreUnavailableError, open_store
from services.recommender.config import RecommenderSettings, load_settings

log = logging.getLogger("services.recommender")


@dataclass
class Running:
    """A started worker: what ``stop`` needs to drain it."""

    server: Any
    port: int
    health: HealthState
    servicer: Any
    watcher: Any = None
    store: Any = None
    http: Any = None


# What "the feature store is down" looks like: the store's own error (it never lets the
# client library's through), and the OS' for a socket that fails outside a store call.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (StoreUnavailableError, OSError)


def make_store(settings: RecommenderSettings) -> FeatureStore:
    """The feature store, unchecked: ``prepare`` waits for it to answer."""
    return open_store(
        settings.redis_url,
        prefix=settings.key_prefix,
        cluster=settings.redis_cluster,
        timeout_s=settings.redis_timeout_s,
        check=False,
    )


def _wait_until(what: str, ready: Any, settings: RecommenderSettings,
                stop: threading.Event) -> Any:  # fmt: skip
    """Poll ``ready()`` (None/False: not yet) until it answers, stop is set, or the startup
    timeout passes (ConfigError: the orchestrator restarts us and the message says why)."""
    deadline = time.monotonic() + settings.startup_timeout_s
    last_log = 0.0
    last_error = ""
    errors: tuple[type[BaseException], ...] = (RecsysError, *STORE_UNAVAILABLE)
    while not stop.is_set():
        try:
            value = ready()
        except PermissionDeniedError:
            raise  # a refused Redis ACL user: waiting cannot help, the message says why
        except errors as exc:
            value, last_error = None, str(exc)
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise ConfigError(f"{what} not ready after {settings.startup_timeout_s:.0f}s"
                              + (f": {last_error}" if last_error else ""))  # fmt: skip
        if now - last_log > 10:
            log.info("waiting for %s", what, extra={"error": last_error})
            last_log = now
        stop.wait(0.2)
    return None


def listen(settings: RecommenderSettings) -> Running:
    """Start one worker's gRPC server, NOT_SERVING and answering UNAVAILABLE until ready."""
    from services.recommender.server import SERVICE_NAME, RecommenderServicer, create_server

    health = HealthState([SERVICE_NAME])
    servicer = RecommenderServicer(noop=settings.noop, auth=settings.auth.policy)
    server, port = create_server(settings, servicer, health)
    running = Running(server, port, health, servicer)
    try:
        server.start()
        running.http = listen_http(settings, running)
    except BaseException:
        stop_running(running, 0)
        raise
    log.info("recommender listening", extra={
        "grpc_port": port, "pid": os.getpid(), "tls": settings.tls is not None,
        "auth": settings.auth.mode,
        "http_port": running.http.port if running.http else None})  # fmt: skip
    if not settings.auth.enabled:
        log.warning("AUTH_MODE=off: every caller may call every method (local demo only)")
    return running


def listen_http(settings: RecommenderSettings, running: Running) -> Any:
    """The HTTP/JSON transport on the gRPC server's loop (None when ``HTTP_ENABLED=false``)."""
    if not settings.http_enabled:
        return None
    from recsys.http_api import HttpServer, bind_socket
    from services.recommender.http import create_app

    sock = bind_socket(settings.host, settings.http_port, "HTTP_PORT", reuse_port=True)
    tls = settings.tls
    http = HttpServer(create_app(running.servicer, running.health), sock, running.server.loop,
                      grace_s=settings.grace_s,
                      tls=None if tls is None else (tls.cert_file, tls.key_file,
                                                    tls.client_ca_file))  # fmt: skip
    http.start()
    return http


@dataclass
class Prepared:
    """A ready service (model loaded, Redis answering) not yet attached to a server."""

    service: Any
    watcher: Any
    store: Any
    version: str
    items: int


def start(
    settings: RecommenderSettings,
    stop: threading.Event | None = None,
    *,
    listen_first: bool = True,
) -> Running:
    """Start one worker's server and make it ready; returns once SERVING (or stop is set).

    ``listen_first`` (one process): the port opens at once, NOT_SERVING, so probes see the
    process while it loads. Workers sharing a port use ``listen_first=False`` instead: a
    worker that is still loading must not be in the SO_REUSEPORT group, or the kernel would
    hand it connections that could only be refused.
    """
    stop = stop or threading.Event()
    if not listen_first:
        prepared = prepare(settings, stop)
        running = listen(settings)
        if prepared is not None:
            attach(running, prepared)
        return running
    running = listen(settings)
    try:
        make_ready(settings, running, stop)
    except BaseException:
        stop_running(running, 0)
        raise
    return running


def make_ready(settings: RecommenderSettings, running: Running, stop: threading.Event) -> None:
    """Wait for a model and Redis, then attach the service and report SERVING."""
    prepared = prepare(settings, stop, running)
    if prepared is not None:
        attach(running, prepared)


def prepare(
    settings: RecommenderSettings, stop: threading.Event, running: Running | None = None
) -> Prepared | None:
    """Load the model and wait for Redis (None when stopped first)."""
    from services.recommender import artifact, metrics
    from services.recommender.ann import SearchSettings
    from services.recommender.reload import ModelHolder, ModelWatcher, load_model
    from services.recommender.service import Limits, RecommenderService, StateReader

    limit_blas_threads()
    store = make_store(settings)
    if running is not None:
        running.store = store  # closed by stop_running even if we fail below

    def loaded() -> Any:
        path = artifact.resolve(settings.model_dir)  # NotFoundError until a model is published
        return load_model(path, settings.ann_expansion)

    try:
        model = _wait_until(f"a model in {settings.model_dir}", loaded, settings, stop)
        if model is None:
            return None
        _wait_until(f"Redis at {redacted_url(settings.redis_url)}", store.ping, settings, stop)
    except BaseException:
        if running is None:
            with contextlib.suppress(Exception):
                store.close()
        raise

    def on_swap(old: Any, new: Any) -> None:
        settle_heap()  # the new model's objects out of every later collection
        if old is not None:
            metrics.MODEL_INFO.labels(old.version).set(0)
        metrics.MODEL_INFO.labels(new.version).set(1)
        metrics.MODEL_ITEMS.set(new.n_items)
        if old is not None:
            metrics.RELOADS.labels(metrics.RELOAD_OK).inc()

    holder = ModelHolder(model, on_swap)
    reader = StateReader(store, unavailable=STORE_UNAVAILABLE, retry_s=settings.redis_retry_s)
    limits = Limits(
        max_k=settings.max_k,
        default_explain_k=settings.default_explain_k,
        max_id_length=settings.max_id_length,
        max_exclude=settings.max_exclude,
        max_categories=settings.max_categories,
        max_batch=settings.max_batch,
        history_mode=settings.history_mode,
        trending_cache_s=settings.trending_cache_s,
        trending_overfetch=settings.trending_overfetch,
        redis_retry_s=settings.redis_retry_s,
        ann_min_items=settings.ann_min_items,
        ann=SearchSettings(settings.ann_fetch, settings.ann_exact_below),
    )
    watcher = ModelWatcher(
        settings.model_dir,
        holder,
        interval_s=settings.reload_interval_s,
        loader=lambda path: load_model(path, settings.ann_expansion),
        on_error=lambda version, exc: metrics.RELOADS.labels(metrics.RELOAD_FAILED).inc(),
    )
    service = RecommenderService(holder.get, reader, limits)
    return Prepared(service, watcher, store, model.version, model.n_items)


def attach(running: Running, prepared: Prepared) -> None:
    from services.recommender import metrics

    running.store = prepared.store
    running.watcher = prepared.watcher
    running.servicer.service = prepared.service
    prepared.watcher.start()
    metrics.REDIS_UP.set(1)
    running.health.set_serving(True)
    log.info("recommender serving", extra={"model_version": prepared.version,
                                           "items": prepared.items, "grpc_port": running.port,
                                           "pid": os.getpid()})  # fmt: skip


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """One BLAS thread per process: a request's algebra is far too small to split, and
    threaded OpenBLAS spin-waits on the cores the other workers need (measured:
    docs/recommender.md, "Concurrency model")."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - implicit depends on it
        return
    threadpool_limits(1)


def stop_running(running: Running, grace_s: float) -> None:
    """Drain: NOT_SERVING first (load balancers stop sending), then let in-flight RPCs end."""
    running.health.shutdown()
    if running.http is not None:
        running.http.stop()  # waits for the HTTP calls in flight, up to GRACE_S
    running.server.stop(grace_s)
    if running.watcher is not None:
        running.watcher.stop()
    if running.store is not None:
        with contextlib.suppress(Exception):
            running.store.close()
    log.info("recommender stopped", extra={"pid": os.getpid()})


def serve(
    settings: RecommenderSettings, stop: threading.Event, *, listen_first: bool = True
) -> int:
    """Run one worker in this process until ``stop`` is set."""
    running = start(settings, stop, listen_first=listen_first)
    try:
        stop.wait()
    finally:
        stop_running(running, settings.grace_s)
    return 0


def _worker_main(settings: RecommenderSettings, index: int) -> None:
    """Entry point of a spawned worker process."""
    configure_logging("recommender", settings.log_level)
    stop = threading.Event()
    install_stop_handlers(stop, log, "signal received; draining")
    try:
        sys.exit(serve(settings, stop, listen_first=False))
    except RecsysError as exc:
        log.error("worker failed", extra={"worker": index, "error": str(exc)})
        sys.exit(2)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host != "0.0.0.0" else "127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_multiprocess_metrics(port: int) -> int:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if port <= 0:
        return 0
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client
    return start_metrics_server(port, registry=registry)


def supervise(settings: RecommenderSettings, stop: threading.Event) -> int:
    """Run ``settings.workers`` worker processes sharing one port until ``stop`` is set."""
    if settings.grpc_port == 0:  # every worker must bind the same port: pick it here
        settings = replace(settings, grpc_port=free_port(settings.host))
    if settings.http_enabled and settings.http_port == 0:
        settings = replace(settings, http_port=free_port(settings.host))
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="recsys-recommender-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        metrics_port = _start_multiprocess_metrics(settings.metrics_port)
    except RecsysError:  # METRICS_PORT taken: nothing else to undo yet
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
        raise
    log.info("starting workers", extra={"workers": settings.workers, "pid": os.getpid(),
                                        "grpc_port": settings.grpc_port,
                                        "http_port": settings.http_port,
                                        "metrics_port": metrics_port})  # fmt: skip
    ctx = multiprocessing.get_context("spawn")  # no fork: gRPC's threads do not survive it
    procs: dict[int, BaseProcess] = {}

    # Under ``python -m`` this module is ``__main__``, which a spawned child cannot import by
    # that name; the same function imported under the package name pickles by reference.
    from services.recommender.__main__ import _worker_main as target

    def launch(index: int) -> None:
        proc = ctx.Process(target=target, args=(settings, index), name=f"worker-{index}")
        proc.start()
        procs[index] = proc

    for index in range(settings.workers):
        launch(index)
    failures = 0
    try:
        while not stop.wait(0.5):
            for index, proc in list(procs.items()):
                if proc.is_alive():
                    continue
                _mark_dead(proc)
                failures += 1
                log.error("worker exited; restarting",
                          extra={"worker": index, "exitcode": proc.exitcode})  # fmt: skip
                if proc.exitcode == 2 and failures > 3 * settings.workers:
                    log.error("workers keep failing at start; giving up")
                    stop.set()
                    return 2
                launch(index)
        return 0
    finally:
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.grace_s + 10
        for proc in procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            _mark_dead(proc)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _mark_dead(proc: BaseProcess) -> None:
    if proc.pid is None:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(Exception):
        multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # configuration comes from the environment only
    try:
        settings = replace(load_settings(), auth=load_auth_settings())
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging("recommender", settings.log_level)
    for name in BLAS_THREAD_VARS:  # inherited by spawned workers before they import numpy
        os.environ.setdefault(name, "1")
    stop = threading.Event()
    install_stop_handlers(stop, log, "signal received; draining")
    try:
        # Here, before any worker binds with SO_REUSEPORT: the workers then share the port
        # with each other, and would join another process' port just as silently.
        ensure_port_free(settings.host, settings.grpc_port, "GRPC_PORT")
        if settings.http_enabled:
            ensure_port_free(settings.host, settings.http_port, "HTTP_PORT")
        if settings.workers > 1:
            return supervise(settings, stop)
        start_metrics_server(settings.metrics_port)
        return serve(settings, stop)
    except RecsysError as exc:
        log.error("recommender failed", extra={"error": str(exc)})
        return 2


if __name__ == "__main__":
    sys.exit(main())
