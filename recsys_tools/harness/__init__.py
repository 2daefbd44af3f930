"""One harness for every driver of real processes: the tests, the benchmarks, the demo.

- :mod:`~recsys_tools.harness.process`: a process in its own group with a log file,
  readiness polling that quotes the log when the process dies or times out, SIGTERM
  then SIGKILL, ``free_port``; the Kafka and Redis launchers build on it.
- :mod:`~recsys_tools.harness.services`: a service (``python -m services.<name>``)
  configured through its environment, ready on its gRPC health check.
- :mod:`~recsys_tools.harness.features` (imported on its own): the events service's
  expected Redis features, computed independently, for the tests and the fault suite.
"""

from recsys_tools.harness.process import (
    ManagedProcess,
    ManagedServer,
    free_port,
    pid_alive,
    pid_matches,
    port_open,
    stop_all_owned,
    stop_pid,
)
from recsys_tools.harness.services import (
    QUIET_ENV,
    Service,
    events_env,
    events_service,
    grpc_serving,
    kafka_env,
    running_loop,
    start_service,
    wait_for,
    wait_serving,
)

__all__ = [
    "QUIET_ENV",
    "ManagedProcess",
    "ManagedServer",
    "Service",
    "events_env",
    "events_service",
    "free_port",
    "grpc_serving",
    "kafka_env",
    "pid_alive",
    "pid_matches",
    "port_open",
    "running_loop",
    "start_service",
    "stop_all_owned",
    "stop_pid",
    "wait_for",
    "wait_serving",
]
