"""Prometheus metrics endpoint shared by the services.

Each service defines its own counters next to its code; this module only starts
the HTTP exporter, so the port is configured the same way everywhere
(``METRICS_PORT``, 0 disables it).
"""

from __future__ import annotations

from prometheus_client import start_http_server


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Start the exporter in a daemon thread; return the bound port (0 when disabled)."""
    if port <= 0:
        return 0
    server, _thread = start_http_server(port, addr=addr)
    return int(server.server_port)
