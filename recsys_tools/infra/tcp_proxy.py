"""A loopback TCP proxy that can add latency or black-hole traffic: a network fault of our own.

The fault suite puts it between the recommender and Redis (``redis_latency``): the service
is given the proxy's address, the test switches the proxy's mode while clients call it.
No root and no network namespace needed (``tc netem`` would need both).

- ``pass``: bytes go through as they come;
- ``delay``: every chunk waits ``delay_s`` before it is forwarded, each way (so a request
  and its reply take at least ``2 * delay_s`` more);
- ``partition``: nothing is forwarded and nothing is closed, new connections are accepted
  and then starved, as when packets are dropped on the way: the client sees only its
  own timeouts, never a reset.

Leaving ``partition`` drops the connections it starved (what a healed network finds:
their streams are out of step), so clients reconnect.

    with TcpProxy(("127.0.0.1", redis_port)) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.set_mode("delay", delay_s=0.3)
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType
from typing import Literal

Mode = Literal["pass", "delay", "partition"]


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; ``set_mode`` changes what happens on the way."""

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        self.upstream = upstream
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(128)
        self.port = int(self._server.getsockname()[1])
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self._accepter = threading.Thread(target=self._accept, daemon=True, name="tcp-proxy")

    def start(self) -> None:
        self._accepter.start()

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        with self._lock:
            healed = self.mode == "partition" and mode != "partition"
            self.mode, self.delay_s = mode, delay_s
            starved = list(self._conns) if healed else []
        for sock in starved:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                with self._lock:
                    mode, delay = self.mode, self.delay_s
                if mode == "partition":
                    time.sleep(0.05)  # leave the bytes unread: nothing goes through
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if mode == "delay" and delay > 0:
                    time.sleep(delay)
                dst.sendall(data)
        except (OSError, ValueError):  # ValueError: closed under us (heal, stop)
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
