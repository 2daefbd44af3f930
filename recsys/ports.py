"""Refuse a listening port that another process holds, with an error that says what to set.

Two ways a taken port used to go wrong. A server that binds it plainly died with a raw
``Address already in use`` traceback. Worse, gRPC's Python server sets ``SO_REUSEPORT``
unless told otherwise, and the recommender needs it (its worker processes share one
port): a server started on a port that another such server holds *joined* it, and the
kernel handed each a share of the connections, so some calls reached the wrong service.

:func:`ensure_port_free` is the check before a bind: it binds a throwaway socket with
``SO_REUSEADDR`` but without ``SO_REUSEPORT``. Linux refuses that bind while any socket
listens on the port, whatever that socket's own options (only two ``SO_REUSEPORT``
sockets may share), and ``SO_REUSEADDR`` keeps the connections of a previous run in
TIME_WAIT from counting as a listener. :func:`bind_failed` turns a server's own failed
bind into the same error. Both raise :class:`~recsys.errors.ConfigError` naming the
variable, which each service's ``main`` prints as one line before exiting with 2.
"""

from __future__ import annotations

import errno
import socket

from recsys.errors import ConfigError


def port_in_use(variable: str, port: int) -> ConfigError:
    """The error for a port that another process listens on."""
    return ConfigError(
        f"{variable}={port} is in use by another process; set {variable} to a free port"
    )


def _probe_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[object, ...]]:
    """The family and address a server asked for ``host:port`` would bind (``[::]`` too)."""
    name = host.strip("[]") or None
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve the listen address {host!r}: {exc}") from None
    family, _type, _proto, _canon, address = infos[0]
    return family, address


def ensure_port_free(host: str, port: int, variable: str) -> None:
    """ConfigError naming ``variable`` when a server could not bind ``host:port`` alone.

    Port 0 (the kernel picks a free one) always passes. The probe socket is closed before
    the server binds, so a process that takes the port in between is caught only by the
    server's own bind (:func:`bind_failed`); the window is milliseconds at start-up.
    """
    if port == 0:
        return
    family, address = _probe_address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise bind_failed(host, port, variable, exc) from None


def bind_failed(host: str, port: int, variable: str, exc: BaseException) -> ConfigError:
    """The ConfigError for a bind of ``host:port`` that failed with ``exc``.

    gRPC reports a failed bind as a bare ``RuntimeError`` ("Failed to bind to address"),
    without the reason, so for anything but an ``OSError`` the port is probed again: when
    it is taken the message says so, otherwise it quotes the original error.
    """
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRINUSE:
            return port_in_use(variable, port)
        reason = exc.strerror or str(exc)
    else:
        try:
            ensure_port_free(host, port, variable)
        except ConfigError as probed:
            return probed
        reason = str(exc)
    return ConfigError(f"{variable}={port}: cannot listen on {host}:{port} ({reason})")
