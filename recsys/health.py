"""Standard gRPC health checking and reflection for every service.

Kubernetes probes the standard ``grpc.health.v1.Health`` service natively, so all
three services expose it, including the Kafka consumers (on a small gRPC server
of their own). A service starts NOT_SERVING and flips to SERVING only when its
model and stores are ready; it goes back to NOT_SERVING while degraded and on
shutdown.

Shutdown also ends every ``Watch`` stream, right after telling it NOT_SERVING. The stock
servicer keeps a Watch open until its client leaves, and ``server.stop(grace)`` waits for
open calls: one watcher made every drain last the whole grace period, and on ``grpc.aio``,
which runs the synchronous servicer's Watch on a pool thread blocked until the stream ends,
the thread outlived the server and the process never exited (SIGTERM ended in SIGKILL).
On ``grpc.aio`` the health service therefore runs on the event loop
(:class:`_AioHealthServicer`): a Watch holds no thread, so open or cancelled watchers can
neither exhaust the pool (``GRPC_THREADS``) that health checks and reflection run on, nor
hold up the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health_pb2 import HealthCheckResponse as Response
from grpc_reflection.v1alpha import reflection

from recsys.ports import bind_failed, ensure_port_free

OVERALL = ""  # the empty service name means "the whole server" in the health protocol


class _WatchStream:
    """One Watch call's response callback, ended at most once, from either side.

    The stock servicer ends it (``None``) when the call ends; :meth:`HealthServicer.end_watches`
    ends it at shutdown. Whichever comes second is ignored, since ending a call twice is an
    error in grpc.
    """

    def __init__(
        self, send: Callable[[Response | None], None], on_end: Callable[[_WatchStream], None]
    ) -> None:
        self._send = send
        self._on_end = on_end
        self._lock = threading.Lock()
        self.open = True

    def __call__(self, response: Response | None) -> None:
        with self._lock:
            if not self.open:
                return
            if response is None:
                self.open = False
            self._send(response)
        if response is None:
            self._on_end(self)


class HealthServicer(health.HealthServicer):
    """The stock servicer, whose Watch streams :meth:`end_watches` can end."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._streams_lock = threading.Lock()
        self._streams: set[_WatchStream] = set()
        self._ended = False

    def Watch(  # noqa: N802 - the gRPC method name
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[..., Any] | None = None,
    ) -> Any:
        if send_response_callback is None:  # a server without non-blocking streams: none of ours
            return super().Watch(request, context)
        stream = _WatchStream(send_response_callback, self._forget)
        super().Watch(request, context, stream)  # sends the current status first
        with self._streams_lock:
            ended = self._ended
            if not ended and stream.open:
                self._streams.add(stream)
        if ended:  # shutdown began meanwhile: the status just sent was NOT_SERVING
            stream(None)
        return None

    def _forget(self, stream: _WatchStream) -> None:
        with self._streams_lock:
            self._streams.discard(stream)

    def end_watches(self) -> None:
        """End every Watch stream (OK status), now and as soon as any later one has had its
        first answer; call after :meth:`enter_graceful_shutdown`, so NOT_SERVING is the
        last status each watcher sees."""
        with self._streams_lock:
            self._ended = True
            streams = list(self._streams)
        for stream in streams:
            stream(None)


class _DoneCallbacks:
    """The ``add_callback`` the stock Watch calls, on a ``grpc.aio`` context."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._context.add_done_callback(lambda _context: callback())  # type: ignore[arg-type]
        return True


class _AioHealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped stub
    """The same health state served on a ``grpc.aio`` event loop, holding no pool thread.

    ``set`` stays synchronous (services call it from ordinary threads); each Watch turns
    the servicer's callbacks into a queue on the loop, and ends when the callback is given
    ``None`` (the call ended, or :meth:`HealthServicer.end_watches`).
    """

    def __init__(self, servicer: HealthServicer) -> None:
        self._servicer = servicer

    async def Check(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        return self._servicer.Check(request, context)  # type: ignore[arg-type]

    async def Watch(  # noqa: N802 - the gRPC method name, an async generator on aio
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Response | None] = asyncio.Queue()

        def send(response: Response | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(queue.put_nowait, response)

        self._servicer.Watch(request, _DoneCallbacks(context), send)  # type: ignore[arg-type]
        while (response := await queue.get()) is not None:
            yield response


class HealthState:
    """Owns a health servicer and the list of service names it reports on."""

    def __init__(self, service_names: Iterable[str] = ()) -> None:
        self.servicer = HealthServicer()
        self.service_names = [OVERALL, *service_names]
        self._serving = False
        self.set_serving(False)

    @property
    def serving(self) -> bool:
        return self._serving

    def set_serving(self, serving: bool) -> None:
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.service_names:
            self.servicer.set(name, status)

    def shutdown(self) -> None:
        """Report NOT_SERVING for good, then end every Watch stream: watchers see the server
        going away, and ``server.stop(grace)`` waits only for the calls in flight."""
        self._serving = False
        self.servicer.enter_graceful_shutdown()
        self.servicer.end_watches()


def add_health_and_reflection(
    server: grpc.Server | grpc.aio.Server, state: HealthState, full_service_names: Iterable[str]
) -> None:
    if isinstance(server, grpc.aio.Server):
        health_pb2_grpc.add_HealthServicer_to_server(_AioHealthServicer(state.servicer), server)
    else:
        health_pb2_grpc.add_HealthServicer_to_server(state.servicer, server)
    names = [*full_service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)


def health_only_server(
    state: HealthState, port: int, host: str = "0.0.0.0", *, variable: str = "GRPC_PORT"
) -> tuple[grpc.Server, int]:
    """An unstarted gRPC server exposing only health + reflection (for Kafka consumers).

    Bound without ``SO_REUSEPORT`` (gRPC's Python default turns it on): a consumer has one
    process per port, so a port that another process holds must be refused, not shared.
    A taken port is a ConfigError naming ``variable`` (recsys.ports).
    """
    ensure_port_free(host, port, variable)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)]
    )
    add_health_and_reflection(server, state, [])
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise bind_failed(host, port, variable, exc) from None
    return server, bound
