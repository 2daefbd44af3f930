"""Standard gRPC health checking and reflection for every service.

Kubernetes probes the standard ``grpc.health.v1.Health`` service natively, so all
three services expose it, including the Kafka consumers (on a small gRPC server
of their own). A service starts NOT_SERVING and flips to SERVING only when its
model and stores are ready; it goes back to NOT_SERVING while degraded and on
shutdown.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

OVERALL = ""  # the empty service name means "the whole server" in the health protocol


class HealthState:
    """Owns a health servicer and the list of service names it reports on."""

    def __init__(self, service_names: Iterable[str] = ()) -> None:
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
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
        """Report NOT_SERVING for good: watchers see the server going away."""
        self._serving = False
        self.servicer.enter_graceful_shutdown()


def add_health_and_reflection(
    server: grpc.Server, state: HealthState, full_service_names: Iterable[str]
) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(state.servicer, server)
    names = [*full_service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)


def health_only_server(
    state: HealthState, port: int, host: str = "0.0.0.0"
) -> tuple[grpc.Server, int]:
    """An unstarted gRPC server exposing only health + reflection (for Kafka consumers)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_health_and_reflection(server, state, [])
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound
