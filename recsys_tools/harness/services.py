"""The services as real processes, for the tests, the benchmarks, the fault suite and the demo.

Each service runs exactly as a deployment runs it (``python -m services.<name>``),
configured only through its environment, in its own process group (a Ctrl-C in a
terminal reaches the driver, which then stops each service with SIGTERM, so it drains as
it would on Kubernetes). Readiness is the service's own gRPC health check (or a probe
the caller names, such as a log line), never a sleep; a service that exits or times out
while starting fails with its log tail in the message.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys_tools.harness.process import ManagedProcess, free_port

if TYPE_CHECKING:
    from recsys.consume import ConsumeLoop
    from recsys_tools.infra.endpoints import KafkaEndpoint

ROOT = Path(__file__).resolve().parents[2]

#: What the demo and the tests start their services with: little logging, a short drain,
#: and one BLAS / TensorFlow thread each (the services would otherwise fight the driver
#: for the machine's cores).
QUIET_ENV: Mapping[str, str] = {
    "LOG_LEVEL": "warning",
    "GRACE_S": "2",
    "OMP_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def grpc_serving(target: str, timeout_s: float = 1.0, service: str = "") -> bool:
    """Whether the gRPC health check of ``service`` at ``target`` answers SERVING now."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            status = stub.Check(request, timeout=timeout_s).status
        except grpc.RpcError:
            return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    detail: Callable[[], str] | None = None,
    *,
    poll_s: float = 0.2,
) -> None:
    """Poll ``predicate`` until it is true; TimeoutError naming ``what`` otherwise.

    A predicate that raises counts as not yet (a broker or Redis restarting in a fault
    case); the last error and ``detail()`` (a log, say) go into the message.
    """
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last_exc = exc
        time.sleep(poll_s)
    message = f"timed out after {timeout_s:.0f} s waiting for {what}"
    if last_exc is not None:
        message += f" (last error: {last_exc!r})"
    if detail is not None:
        message += f"\n{detail()[-3000:]}"
    raise TimeoutError(message)


def kafka_env(kafka: KafkaEndpoint) -> dict[str, str]:
    """Bootstrap plus the broker's consumer timeouts, as the services read them."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    for key, value in kafka.consumer_overrides.items():
        env[f"KAFKA_{key.upper()}"] = str(value)
    return env


class Service(ManagedProcess):
    """``python -m <module_args>`` as a deployment runs it; restartable with the same env.

    ``env`` goes over this process's environment; ``port`` (optional) is the ``GRPC_PORT``
    it is given and where :func:`wait_serving` asks its health check; ``ready`` replaces
    that probe (a service on ``GRPC_PORT=0`` has no known port: say, a line in its log).
    The metrics port and auth are off unless ``env`` sets them, and a multi-process Prometheus
    directory of the driver is never inherited. ``unset`` names variables taken out of
    the environment last, so the service falls back to its documented defaults (the
    one-host test runs every service on its default ``GRPC_PORT`` and ``METRICS_PORT``;
    ``port`` then only says where to probe).
    """

    # SIGTERM to the service itself: a recommender with workers forwards it to them
    term_group = False

    def __init__(
        self,
        name: str,
        module_args: Sequence[str],
        env: Mapping[str, str],
        *,
        log_path: Path,
        port: int | None = None,
        ready: Callable[[Service], bool] | None = None,
        cwd: Path = ROOT,
        unset: Sequence[str] = (),
    ) -> None:
        full_env = {
            **os.environ,
            "GRPC_PORT": "0",
            "METRICS_PORT": "0",
            "HTTP_PORT": "0",
            "PYTHONUNBUFFERED": "1",
            # Local processes on loopback: no credentials unless the caller turns auth on
            # (AUTH_MODE=required with AUTH_CREDENTIALS_FILE in ``env``).
            "AUTH_MODE": "off",
            **env,
        }
        if port is not None:
            full_env["GRPC_PORT"] = str(port)
        for variable in ("PROMETHEUS_MULTIPROC_DIR", *unset):
            full_env.pop(variable, None)
        super().__init__(name, [sys.executable, "-m", *module_args], log_path=log_path,
                         cwd=cwd, env=full_env)  # fmt: skip
        self.port = port
        self.ready = ready

    @property
    def target(self) -> str:
        if self.port is None:
            raise ValueError(f"{self.name} was started without a known GRPC_PORT")
        return f"127.0.0.1:{self.port}"

    def serving(self) -> bool:
        """The readiness probe: ``ready`` if given, else the gRPC health check on ``port``."""
        if self.ready is not None:
            return self.ready(self)
        return grpc_serving(self.target)

    def log_count(self, text: str) -> int:
        """How often ``text`` occurs in the log (readiness markers, restarts)."""
        return self.log_text().count(text)


def start_service(name: str, module_args: Sequence[str], env: Mapping[str, str],
                  work_dir: Path) -> Service:  # fmt: skip
    """A started :class:`Service` on a free port with :data:`QUIET_ENV` under ``env``,
    logging to ``work_dir/<name>.log``; see :func:`wait_serving`."""
    service = Service(name, module_args, {**QUIET_ENV, **env},
                      log_path=work_dir / f"{name}.log", port=free_port())  # fmt: skip
    service.start()
    return service


def wait_serving(service: Service, timeout_s: float = 180.0) -> Service:
    """Until the service's readiness probe passes; InfraError quoting its log otherwise
    (also at once, should it exit meanwhile)."""
    what = f"gRPC health SERVING on {service.target}" if service.ready is None else "ready"
    service.wait_ready(service.serving, timeout_s=timeout_s, what=what, interval_s=0.2)
    return service


def events_env(kafka: KafkaEndpoint, redis_url: str, topic: str, prefix: str) -> dict[str, str]:
    """The events service's environment for a test's own topic (its dead letters on
    ``<topic>.dlq``, group ``<topic>-events``) and key prefix; topics made by the caller."""
    return {
        **kafka_env(kafka),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "EVENTS_TOPIC": topic,
        "EVENTS_DLQ_TOPIC": f"{topic}.dlq",
        "EVENTS_GROUP_ID": f"{topic}-events",
        "EVENTS_CREATE_TOPICS": "false",
        "EVENTS_POLL_TIMEOUT_MS": "100",
    }


@contextlib.contextmanager
def events_service(kafka: KafkaEndpoint, redis_url: str, topic: str, prefix: str,
                   work_dir: Path, **extra: str) -> Iterator[Service]:  # fmt: skip
    """The events service consuming ``topic`` (four partitions) into Redis under
    ``prefix``, stopped with SIGTERM (then SIGKILL) on exit; not waited for: the callers
    wait for what it writes."""
    from recsys.kafka_io import ensure_topics

    ensure_topics(kafka.bootstrap, {topic: 4, f"{topic}.dlq": 1})
    env = {**events_env(kafka, redis_url, topic, prefix), "LOG_LEVEL": "warning", **extra}
    service = Service("events", ["services.events"], env,
                      log_path=work_dir / f"events-{topic}.log")  # fmt: skip
    service.start()
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def running_loop(loop: ConsumeLoop[Any], timeout_s: float = 60.0) -> Iterator[ConsumeLoop[Any]]:
    """``loop.run`` in a thread, yielded once its consumer joined the group and got
    partitions (records produced before that would race the join); stopped and joined
    on exit. The caller owns and closes the clients and the store."""
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: bool(loop.consumer.assignment()),
            timeout_s,
            "the consume loop's consumer to get partitions",
        )
        yield loop
    finally:
        stop.set()
        thread.join(timeout=30)
