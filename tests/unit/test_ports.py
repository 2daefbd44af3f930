"""The port check every service runs before it listens (recsys.ports).

A listener with ``SO_REUSEPORT`` is the case that matters: gRPC's Python servers set
it by default, and a second server with it would join the port silently rather than
fail, so the check must refuse a port held that way as well as a plainly bound one.
Loopback sockets only; the services themselves are started in
tests/integration/test_one_host.py.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from recsys.errors import ConfigError
from recsys.ports import bind_failed, ensure_port_free, port_in_use


@pytest.fixture(params=[False, True], ids=["plain", "reuseport"])
def listener(request: pytest.FixtureRequest) -> Iterator[int]:
    """A socket listening on 0.0.0.0 (as the services bind), with or without SO_REUSEPORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if request.param:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_message_names_the_variable_to_change() -> None:
    assert str(port_in_use("GRPC_PORT", 50051)) == (
        "GRPC_PORT=50051 is in use by another process; set GRPC_PORT to a free port"
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "[::]"])
def test_a_listening_port_is_refused_whatever_its_socket_options(listener: int, host: str) -> None:
    with pytest.raises(ConfigError, match=f"^METRICS_PORT={listener} is in use by another"):
        ensure_port_free(host, listener, "METRICS_PORT")


def test_a_free_port_and_port_zero_pass() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    ensure_port_free("0.0.0.0", port, "GRPC_PORT")
    ensure_port_free("0.0.0.0", 0, "GRPC_PORT")


def test_a_closed_connection_in_time_wait_does_not_count_as_a_listener() -> None:
    """A restarted service must get its port back while the last run's connections linger."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.close()
    ensure_port_free("127.0.0.1", port, "GRPC_PORT")


def test_a_failed_grpc_bind_becomes_the_in_use_error_when_the_port_is_taken(
    listener: int,
) -> None:
    """gRPC says only "Failed to bind to address": the port is probed for the reason."""
    error = bind_failed("0.0.0.0", listener, "GRPC_PORT", RuntimeError("Failed to bind"))
    assert str(error) == str(port_in_use("GRPC_PORT", listener))


def test_other_bind_failures_keep_their_reason() -> None:
    error = bind_failed("0.0.0.0", 80, "METRICS_PORT", OSError(errno.EACCES, "Permission denied"))
    assert str(error) == "METRICS_PORT=80: cannot listen on 0.0.0.0:80 (Permission denied)"
    in_use = bind_failed("0.0.0.0", 9100, "METRICS_PORT", OSError(errno.EADDRINUSE, "in use"))
    assert str(in_use) == str(port_in_use("METRICS_PORT", 9100))
