"""The demo's building blocks: the three services as real processes, and the models they load.

Each service runs exactly as a deployment runs it (``python -m services.<name>``),
configured only through its environment, in its own process group (a Ctrl-C in the
terminal reaches the demo, which then stops them in order with SIGTERM, so each drains
as it would on Kubernetes). Readiness is the service's own gRPC health check, not a sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError
from recsys_tools.infra.endpoints import KafkaEndpoint
from recsys_tools.infra.process import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    """A started service: its process, gRPC port (health or API) and log."""

    name: str
    process: ManagedProcess
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 20.0) -> None:
        self.process.stop(timeout_s=timeout_s)


def health_serving(target: str, timeout_s: float = 1.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s).status
        except grpc.RpcError:
            return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def kafka_env(kafka: KafkaEndpoint) -> dict[str, str]:
    """Bootstrap plus the broker's consumer timeouts, as the services read them."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    for key, value in kafka.consumer_overrides.items():
        env[f"KAFKA_{key.upper()}"] = str(value)
    return env


def start_service(name: str, module_args: list[str], env: Mapping[str, str],
                  work_dir: Path) -> Service:  # fmt: skip
    """``python -m <module_args>`` with ``GRPC_PORT`` on a free port; see :func:`wait_serving`."""
    port = free_port()
    full_env = {
        **os.environ,
        "GRPC_PORT": str(port),
        "METRICS_PORT": "0",
        "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        "GRACE_S": "2",
        # the services' TensorFlow / BLAS threads would fight the demo for two cores
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **env,
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = ManagedProcess(name, [sys.executable, "-m", *module_args],
                             log_path=work_dir / f"{name}.log", cwd=ROOT, env=full_env)  # fmt: skip
    process.start()
    return Service(name, process, port)


def wait_serving(service: Service, timeout_s: float = 180.0) -> None:
    """Until the service's health check says SERVING; InfraError quoting its log otherwise."""
    service.process.wait_ready(lambda: health_serving(service.target), timeout_s=timeout_s,
                               what=f"gRPC health SERVING on {service.target}",
                               interval_s=0.3)  # fmt: skip


# --------------------------------------------------------------------------- models
@dataclass
class Timeline:
    """MovieLens-100K in time order, cut into the training part and the part to replay."""

    log: Any  # services.recommender.evaluation.EventLog
    train_idx: Any  # np.ndarray of event rows
    replay_idx: Any  # np.ndarray, time order


def load_timeline(train_frac: float) -> Timeline:
    import numpy as np

    from recsys_tools.data.movielens import load_ml100k
    from services.recommender.evaluation.data import event_log_from_movielens, time_split

    log = event_log_from_movielens(load_ml100k())
    train_idx, rest_idx = time_split(np.arange(len(log)), train_frac)
    order = np.argsort(log.timestamps[rest_idx], kind="stable")
    return Timeline(log, train_idx, rest_idx[order])


def train_recommender(timeline: Timeline, store: Path) -> tuple[str, float]:
    """ALS with ``recsys train``'s tuned defaults on the training part; (version, seconds)."""
    from services.recommender.training import ML100K_TUNED, TrainConfig, UserItemMatrix, train

    started = time.perf_counter()
    lg = timeline.log
    model = train(UserItemMatrix(lg.matrix(timeline.train_idx), lg.user_ids, lg.item_ids),
                  TrainConfig().with_params(**ML100K_TUNED), items=lg.item_meta)  # fmt: skip
    return model.save(store), time.perf_counter() - started


def has_sentiment_model(model_dir: Path) -> bool:
    """A TF-Serving layout with at least one exported version."""
    if (model_dir / "saved_model.pb").is_file():
        return True
    return model_dir.is_dir() and any(
        p.name.isdigit() and (p / "saved_model.pb").is_file() for p in model_dir.iterdir()
    )


def train_sentiment(model_dir: Path, *, max_train: int, epochs: int, log_path: Path) -> float:
    """A reduced sentiment model (``recsys sentiment train --max-train``) in a subprocess, so
    TensorFlow never loads into the demo process; returns seconds. ConfigError on failure."""
    started = time.perf_counter()
    argv = [sys.executable, "-m", "recsys_tools.cli", "sentiment", "train", "--quiet",
            "--model-dir", str(model_dir), "--max-train", str(max_train),
            "--epochs", str(epochs)]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log_path.open("wb") as out:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)  # fmt: skip
    if done.returncode != 0 or not has_sentiment_model(model_dir):
        tail = log_path.read_text(errors="replace")[-1500:]
        raise ConfigError(f"training the sentiment model failed (exit {done.returncode}); "
                          f"log {log_path}:\n{tail}")  # fmt: skip
    return time.perf_counter() - started
