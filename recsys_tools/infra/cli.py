"""``recsys infra up|status|down``: local Kafka and Redis that outlive the command.

``up`` starts detached processes and records them (pid, ports, work dir, the
command-line marker that identifies them) in ``$RECSYS_STATE_DIR/infra.json``;
``down`` stops exactly those pids, after checking each still is the process we
started, and removes the work dirs. Both are idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError, RecsysError
from recsys_tools.harness import pid_matches, port_open, stop_pid
from recsys_tools.infra.apache_kafka import ApacheKafka
from recsys_tools.infra.endpoints import KafkaEndpoint, RedisEndpoint, cache_dir
from recsys_tools.infra.launcher import (
    KAFKA_CHOICES,
    kafka_preflight,
    redis_mode,
    redis_preflight,
    resolve_kafka_kind,
    start_kafka,
    start_redis,
)
from recsys_tools.infra.redis_server import RedisServer
from recsys_tools.infra.tansu import TansuBroker

STATE_FILE = "infra.json"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """RECSYS_STATE_DIR, default $RECSYS_CACHE_DIR/state (~/.cache/recsys/state)."""
    env = os.environ if env is None else env
    raw = env.get("RECSYS_STATE_DIR", "").strip()
    return Path(raw).expanduser().resolve() if raw else cache_dir(env) / "state"


def load_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"corrupt state file {path} ({exc}); delete it and rerun") from None
    return data if isinstance(data, dict) else {}


def save_state(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / STATE_FILE)


def _alive(entry: Mapping[str, Any]) -> bool:
    pid = entry.get("pid")
    if not isinstance(pid, int):
        return False
    return pid_matches(pid, str(entry.get("marker", "")))


def _ready(entry: Mapping[str, Any]) -> bool:
    port = entry.get("port")
    return isinstance(port, int) and port_open("127.0.0.1", port)


def kafka_entry(endpoint: KafkaEndpoint) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": endpoint.kind,
        "bootstrap": endpoint.bootstrap,
        "description": endpoint.description,
        "consumer_overrides": dict(endpoint.consumer_overrides),
    }
    server = endpoint.server
    if isinstance(server, ApacheKafka | TansuBroker) and server.pid is not None:
        entry.update(
            pid=server.pid,
            port=server.port,
            work_dir=str(server.work_dir),
            log=str(server.log_path),
            # Apache carries -Drecsys.workdir=<dir>; Tansu's cluster id embeds its port.
            marker=str(server.work_dir)
            if isinstance(server, ApacheKafka)
            else f"recsys-{server.port}",
        )
        if isinstance(server, ApacheKafka):
            entry["controller_port"] = server.controller_port
    return entry


def redis_entry(endpoint: RedisEndpoint) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": endpoint.url, "description": endpoint.description}
    server = endpoint.server
    if isinstance(server, RedisServer) and server.pid is not None:
        entry.update(
            pid=server.pid,
            port=server.port,
            work_dir=str(server.work_dir),
            log=str(server.log_path),
            marker=f":{server.port}",  # redis retitles itself "redis-server 127.0.0.1:<port>"
        )
    return entry


def _print_exports(state: Mapping[str, Any]) -> None:
    kafka, redis = state.get("kafka", {}), state.get("redis", {})
    print(f"kafka: {kafka.get('bootstrap')} ({kafka.get('description')})", file=sys.stderr)
    overrides = kafka.get("consumer_overrides") or {}
    if overrides:
        print(f"kafka consumer overrides: {json.dumps(overrides)}", file=sys.stderr)
    print(f"redis: {redis.get('url')} ({redis.get('description')})", file=sys.stderr)
    # stdout carries only the eval-able line: eval "$(recsys infra up)". AUTH_MODE=off: the
    # services started from this shell serve the local demo without credentials (their
    # default, required, is for deployments; docs/recommender.md, "Authentication").
    print(
        f"export KAFKA_BOOTSTRAP_SERVERS={kafka.get('bootstrap')} REDIS_URL={redis.get('url')}"
        " AUTH_MODE=off"
    )


def cmd_up(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    directory = state_dir(env)
    state = load_state(directory)
    kafka_ok = bool(state.get("kafka")) and ("pid" not in state["kafka"] or _alive(state["kafka"]))
    redis_ok = bool(state.get("redis")) and ("pid" not in state["redis"] or _alive(state["redis"]))
    if kafka_ok and redis_ok:
        print(f"already up (state {directory / STATE_FILE})", file=sys.stderr)
        _print_exports(state)
        return 0
    # Validate everything before starting anything, so a bad setting leaves nothing behind.
    kind = resolve_kafka_kind(env, args.kafka, prefer_embedded=False)
    if not kafka_ok:
        kafka_preflight(kind, env)
    if not redis_ok:
        redis_preflight(env)
    if redis_mode(env) == "docker" or kind == "docker":
        raise ConfigError(
            "`recsys infra up` manages local processes only; with RECSYS_INFRA=docker use the "
            "pytest fixtures, or unset RECSYS_INFRA"
        )
    started: list[str] = []
    try:
        if not kafka_ok:
            _cleanup_entry(state.get("kafka"))
            work = directory / "kafka"
            shutil.rmtree(work, ignore_errors=True)
            state["kafka"] = kafka_entry(start_kafka(kind, work, env, detached=True))
            started.append("kafka")
            save_state(directory, state)
        if not redis_ok:
            _cleanup_entry(state.get("redis"))
            work = directory / "redis"
            shutil.rmtree(work, ignore_errors=True)
            endpoint = start_redis(work, env, appendonly=args.appendonly, detached=True)
            state["redis"] = redis_entry(endpoint)
            started.append("redis")
            save_state(directory, state)
    except BaseException:
        for name in started:  # no half-started stack: undo what this call started
            _cleanup_entry(state.pop(name, None))
        save_state(directory, state)
        raise
    save_state(directory, state)
    _print_exports(state)
    return 0


def _cleanup_entry(entry: Mapping[str, Any] | None) -> bool:
    if not entry or not isinstance(entry.get("pid"), int):
        return False
    return stop_pid(int(entry["pid"]), marker=str(entry.get("marker", "")), timeout_s=30.0)


def cmd_down(args: argparse.Namespace) -> int:
    directory = state_dir()
    state = load_state(directory)
    if not state:
        print("nothing is up", file=sys.stderr)
        return 0
    for name in ("kafka", "redis"):
        entry = state.get(name)
        if not entry:
            continue
        stopped = _cleanup_entry(entry)
        pid = entry.get("pid")
        if isinstance(pid, int) and _alive(entry):
            raise RecsysError(f"{name} (pid {pid}) is still running after SIGKILL")
        print(f"{name}: {'stopped pid ' + str(pid) if stopped else 'not running'}", file=sys.stderr)
        work = entry.get("work_dir")
        if work and not args.keep_data:
            shutil.rmtree(work, ignore_errors=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return 0


def status_report(state: Mapping[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name in ("kafka", "redis"):
        entry = state.get(name)
        if not entry:
            report[name] = {"state": "down"}
            continue
        info = {k: entry.get(k) for k in ("kind", "bootstrap", "url", "description", "pid")}
        info = {k: v for k, v in info.items() if v is not None}
        if "pid" in entry:
            alive = _alive(entry)
            info["alive"] = alive
            info["ready"] = alive and _ready(entry)
            info["state"] = "up" if info["ready"] else ("starting" if alive else "dead")
        else:
            info["state"] = "external"
        report[name] = info
    return report


def cmd_status(args: argparse.Namespace) -> int:
    report = status_report(load_state(state_dir()))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for name, info in report.items():
            extra = " ".join(f"{k}={v}" for k, v in info.items() if k != "state")
            print(f"{name}: {info['state']} {extra}".rstrip())
    healthy = all(info["state"] in ("up", "external") for info in report.values())
    return 0 if healthy else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "infra", help="run local Kafka and Redis", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="infra_command", metavar="ACTION")
    sub.required = True

    up = sub.add_parser("up", help="start Kafka and Redis in the background (idempotent)")
    up.add_argument(
        "--kafka",
        choices=KAFKA_CHOICES,
        default=None,
        help="which Kafka to run (default: $RECSYS_KAFKA or auto)",
    )
    up.add_argument(
        "--appendonly",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Redis AOF persistence (default: $RECSYS_REDIS_APPENDONLY or off)",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop everything `up` started (idempotent)")
    down.add_argument("--keep-data", action="store_true", help="keep the work dirs")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="is each process alive and ready; exit 1 if not")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=cmd_status)
