"""Prometheus metrics endpoint shared by the services.

Each service defines its own counters next to its code; this module only starts
the HTTP exporter, so the port is configured the same way everywhere
(``METRICS_PORT``, 0 disables it).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from recsys.ports import bind_failed


def start_metrics_server(
    port: int, addr: str = "0.0.0.0", *, registry: CollectorRegistry = REGISTRY
) -> int:
    """Start the exporter in a daemon thread; return the bound port (0 when disabled).

    A port that is taken is a ConfigError naming ``METRICS_PORT`` (the exporter binds
    without ``SO_REUSEPORT``, so the bind itself detects it), not an ``OSError`` traceback.
    """
    if port <= 0:
        return 0
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise bind_failed(addr, port, "METRICS_PORT", exc) from None
    return int(server.server_port)
