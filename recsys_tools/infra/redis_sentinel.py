"""A Redis primary, its replica and a Sentinel on loopback: the smallest set that fails over.

The fault suite (``redis_primary_kill``) and the integration tests kill the primary and
check that the services follow the promotion through a ``redis+sentinel://`` URL
(:func:`recsys.redis_io.make_redis`). Three plain ``redis-server`` processes from the same
binary as :class:`~recsys_tools.infra.redis_server.RedisServer` (a Sentinel is
``redis-server --sentinel`` with a config file it may rewrite):

- the primary, and a replica started with ``--replicaof`` it (with
  ``replication_proxy=True``, through a loopback :class:`~recsys_tools.infra.tcp_proxy.TcpProxy`
  to the primary, so a test can cut the replication link alone: ``cut_replication()``);
- one Sentinel monitoring them with quorum 1, declaring the primary down after
  ``down_after_ms`` without an answer and promoting the replica.

One Sentinel is enough on one host (the Sentinels' own fault tolerance is not what is
tested here); production runs three or more on separate machines.

    with RedisSentinelSet(tmp_path) as rs:
        client = make_redis(rs.url)      # redis+sentinel://127.0.0.1:<port>/recsys
        rs.kill_primary()
        rs.wait_failover()
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.errors import InfraError
from recsys_tools.harness import ManagedProcess, ManagedServer, free_port
from recsys_tools.infra.lifecycle import StartedOnEnter
from recsys_tools.infra.redis_server import RedisServer
from recsys_tools.infra.tcp_proxy import TcpProxy

SERVICE = "recsys"


class ReplicaServer(RedisServer):
    """A redis-server that replicates ``primary_port`` from its start."""

    def __init__(self, work_dir: Path, *, primary_port: int, binary: str | None = None) -> None:
        super().__init__(work_dir, binary=binary)
        #: where it replicates from: the primary's port, or a proxy's in front of it
        self.primary_port = primary_port

    def argv(self) -> list[str]:
        return [*super().argv(), "--replicaof", "127.0.0.1", str(self.primary_port)]


class SentinelServer(ManagedServer):
    """``redis-server <conf> --sentinel`` monitoring one primary as ``service``."""

    def __init__(
        self,
        work_dir: Path,
        *,
        primary_port: int,
        binary: str,
        service: str = SERVICE,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        start_timeout_s: float = 20.0,
    ) -> None:
        self.work_dir = work_dir.resolve()
        self.binary = binary
        self.primary_port = primary_port
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.port = free_port()
        self.start_timeout_s = start_timeout_s
        self.detached = False
        self.log_path = self.work_dir / "sentinel.log"
        self.config_path = self.work_dir / "sentinel.conf"
        self._proc: ManagedProcess | None = None

    def config(self) -> str:
        name = self.service
        return "".join(
            line + "\n"
            for line in (
                f"port {self.port}",
                "bind 127.0.0.1",
                f"dir {self.work_dir}",
                f"sentinel monitor {name} 127.0.0.1 {self.primary_port} 1",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
            )
        )

    def start(self) -> None:
        if self._proc is not None and self._proc.running():
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():  # a restart keeps what the Sentinel learned
            self.config_path.write_text(self.config())
        argv = [self.binary, str(self.config_path), "--sentinel"]
        proc = ManagedProcess(
            "redis-sentinel", argv, log_path=self.log_path, cwd=self.work_dir,
            detached=self.detached,
        )  # fmt: skip
        self._launch(proc, f"PING on Sentinel port {self.port}")

    def _ready(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def primary(self) -> tuple[str, int] | None:
        """The primary this Sentinel names now (None while it cannot say)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        try:
            addr = client.sentinel_get_master_addr_by_name(self.service)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        finally:
            client.close()
        return (str(addr[0]), int(addr[1])) if addr else None


class RedisSentinelSet(StartedOnEnter):
    """Primary + replica + Sentinel; ``url`` is what the services' REDIS_URL is set to."""

    def __init__(
        self,
        work_dir: Path,
        *,
        binary: str | None = None,
        service: str = SERVICE,
        down_after_ms: int = 1000,
        replication_proxy: bool = False,
    ) -> None:
        self.work_dir = work_dir.resolve()
        self.primary = RedisServer(self.work_dir / "primary", binary=binary)
        #: Only the replica's replication stream goes through it; the Sentinel and the
        #: clients talk to both servers directly (the primary's INFO names the replica by
        #: its own listening port), so cutting it leaves the failover possible.
        self.proxy = TcpProxy(("127.0.0.1", self.primary.port)) if replication_proxy else None
        self.replica = ReplicaServer(
            self.work_dir / "replica",
            primary_port=self.proxy.port if self.proxy else self.primary.port,
            binary=self.primary.binary,
        )
        self.sentinel = SentinelServer(
            self.work_dir / "sentinel",
            primary_port=self.primary.port,
            binary=self.primary.binary,
            service=service,
            down_after_ms=down_after_ms,
            # The Sentinel "fixes" (+fix-slave-config) a replica that names another
            # primary address (the proxy's) once failover-timeout has passed since it
            # learned it, re-pointing it at the primary directly: pushed out so the replica
            # keeps replicating through the proxy for the whole test.
            failover_timeout_ms=600_000 if replication_proxy else 5000,
        )
        self.service = service

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    @property
    def description(self) -> str:
        return f"{self.primary.description}, primary + 1 replica behind 1 Sentinel"

    def start(self, timeout_s: float = 30.0) -> None:
        if self.proxy is not None:
            self.proxy.start()
        self.primary.start()
        self.replica.start()
        self.wait_replicas(1, timeout_s)
        self.sentinel.start()
        deadline = time.monotonic() + timeout_s
        # The Sentinel learns the replica from the primary's INFO (every 10 s at first).
        while self.known_replicas() < 1:
            if time.monotonic() > deadline:
                raise InfraError(f"the Sentinel did not discover the replica in {timeout_s:.0f} s")
            time.sleep(0.2)

    def known_replicas(self) -> int:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.sentinel.port, socket_timeout=1.0)
        try:
            return len(client.sentinel_slaves(self.service))  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def wait_replicas(self, n: int, timeout_s: float) -> None:
        """Until the current primary reports ``n`` replicas online and in sync."""
        import redis

        deadline = time.monotonic() + timeout_s
        port = self.current_primary_port()
        while True:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
            try:
                info: Mapping[str, Any] = client.info("replication")
                online = sum(
                    1
                    for key, value in info.items()
                    if key.startswith("slave") and isinstance(value, dict)
                    and value.get("state") == "online"
                )  # fmt: skip
                if online >= n:
                    return
            except redis.RedisError:
                pass
            finally:
                client.close()
            if time.monotonic() > deadline:
                raise InfraError(f"fewer than {n} replicas in sync after {timeout_s:.0f} s")
            time.sleep(0.1)

    def cut_replication(self) -> None:
        """Black-hole the replication link (``replication_proxy=True`` only): from now on
        the primary acknowledges writes its replica never receives, and neither side
        notices before ``repl-timeout`` (60 s). The Sentinel still reaches both."""
        import redis

        if self.proxy is None:
            raise InfraError("cut_replication needs RedisSentinelSet(replication_proxy=True)")
        client = redis.Redis(host="127.0.0.1", port=self.replica.port, socket_timeout=1.0)
        try:
            via = int(client.info("replication").get("master_port", 0))
        finally:
            client.close()
        if via != self.proxy.port:  # the Sentinel re-pointed it: a cut would cut nothing
            raise InfraError(f"the replica replicates from port {via}, not the proxy's")
        self.proxy.set_mode("partition")

    def heal_replication(self) -> None:
        """End the cut: the starved connections are dropped, the replica reconnects."""
        if self.proxy is not None:
            self.proxy.set_mode("pass")

    def current_primary_port(self) -> int:
        named = self.sentinel.primary() if self.sentinel.running() else None
        return named[1] if named else self.primary.port

    def servers(self) -> dict[int, RedisServer]:
        return {self.primary.port: self.primary, self.replica.port: self.replica}

    def kill_primary(self) -> RedisServer:
        """SIGKILL whichever server is the primary now (no AOF flush, no goodbye)."""
        server = self.servers()[self.current_primary_port()]
        server.kill()
        return server

    def wait_failover(self, old_port: int, timeout_s: float = 30.0) -> float:
        """Seconds until the Sentinel names a primary other than ``old_port`` that answers
        as a primary."""
        import redis

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            named = self.sentinel.primary()
            if named and named[1] != old_port:
                client = redis.Redis(host="127.0.0.1", port=named[1], socket_timeout=1.0)
                try:
                    if client.info("replication").get("role") == "master":
                        return time.monotonic() - t0
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise InfraError(f"no failover away from port {old_port} within {timeout_s:.0f} s")

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            server.stop()
        if self.proxy is not None:
            self.proxy.stop()
