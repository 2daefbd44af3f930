"""``recsys infra`` and the launchers against real processes.

The CLI runs as a subprocess with a temporary RECSYS_STATE_DIR, exactly as a
user would run it; the checks look at pids, not at what the CLI says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.redis_io import make_redis
from recsys_tools.harness import free_port, pid_alive, port_open
from recsys_tools.infra.apache_kafka import metadata_ready
from recsys_tools.infra.endpoints import KafkaEndpoint
from recsys_tools.infra.redis_server import RedisServer

pytestmark = pytest.mark.integration

_CLEAN = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "RECSYS_KAFKA", "RECSYS_INFRA")


def run_infra(
    args: list[str], state_dir: Path, timeout: float = 180, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    env["RECSYS_STATE_DIR"] = str(state_dir)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "recsys_tools.cli", "infra", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("kind", ["tansu", "apache"])
def test_infra_up_status_down_leaves_no_process_behind(tmp_path: Path, kind: str) -> None:
    if kind == "apache" and os.environ.get("RECSYS_TEST_KAFKA") == "tansu":
        pytest.skip("Apache Kafka disabled by RECSYS_TEST_KAFKA=tansu")
    state_dir = tmp_path / "state"
    up = run_infra(["up", "--kafka", kind], state_dir)
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / "infra.json").read_text())
        pids = [state["kafka"]["pid"], state["redis"]["pid"]]
        assert all(pid_alive(pid) for pid in pids)
        exports = up.stdout.strip()
        assert exports == (
            f"export KAFKA_BOOTSTRAP_SERVERS={state['kafka']['bootstrap']} "
            f"REDIS_URL={state['redis']['url']} AUTH_MODE=off"
        )
        assert metadata_ready(state["kafka"]["bootstrap"])
        client = make_redis(state["redis"]["url"])
        assert client.ping()
        client.close()

        again = run_infra(["up", "--kafka", kind], state_dir)  # idempotent: same processes
        assert again.returncode == 0, again.stderr
        assert again.stdout == up.stdout
        assert json.loads((state_dir / "infra.json").read_text())["kafka"]["pid"] == pids[0]

        status = run_infra(["status", "--json"], state_dir)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["kafka"]["state"] == "up" and report["kafka"]["kind"] == kind
        assert report["redis"]["state"] == "up"
    finally:
        down = run_infra(["down"], state_dir)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert not (state_dir / "infra.json").exists()
    assert not port_open("127.0.0.1", int(state["kafka"]["port"]))

    assert run_infra(["down"], state_dir).returncode == 0  # idempotent
    after = run_infra(["status", "--json"], state_dir)
    assert after.returncode == 1
    assert json.loads(after.stdout) == {"kafka": {"state": "down"}, "redis": {"state": "down"}}


def test_unreachable_kafka_bootstrap_fails_fast_naming_the_variable(tmp_path: Path) -> None:
    closed = free_port()
    result = run_infra(["up"], tmp_path, timeout=60, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed}")
    line = one_line_error(result)
    assert "KAFKA_BOOTSTRAP_SERVERS" in line and f"127.0.0.1:{closed}" in line
    assert not (tmp_path / "infra.json").exists() or "kafka" not in json.loads(
        (tmp_path / "infra.json").read_text()
    )


def test_malformed_kafka_bootstrap_fails_fast(tmp_path: Path) -> None:
    line = one_line_error(run_infra(["up"], tmp_path, KAFKA_BOOTSTRAP_SERVERS="localhost"))
    assert "KAFKA_BOOTSTRAP_SERVERS" in line and "host:port" in line


def test_non_redis_url_fails_fast_before_starting_kafka(tmp_path: Path) -> None:
    result = run_infra(["up", "--kafka", "tansu"], tmp_path, REDIS_URL="http://x")
    line = one_line_error(result)
    assert "REDIS_URL" in line and "redis://" in line
    assert not (tmp_path / "kafka").exists(), "nothing may start when the config is bad"


def test_unreachable_redis_url_fails_fast(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = one_line_error(run_infra(["up", "--kafka", "tansu"], tmp_path, REDIS_URL=url))
    assert "REDIS_URL" in line
    state_file = tmp_path / "infra.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    assert "kafka" not in state


def test_apache_without_java_says_what_to_install_or_set(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_infra(
        ["up"], tmp_path / "state", timeout=60, PATH=str(empty_bin), RECSYS_KAFKA="apache"
    )
    line = one_line_error(result)
    for needed in ("JDK 17+", "Maven", "KAFKA_BOOTSTRAP_SERVERS", "RECSYS_KAFKA=tansu"):
        assert needed in line


def test_unknown_kafka_kind_is_rejected(tmp_path: Path) -> None:
    line = one_line_error(run_infra(["up"], tmp_path, RECSYS_KAFKA="zookeeper"))
    assert "RECSYS_KAFKA" in line


def test_redis_restart_with_appendonly_keeps_data(
    redis_server_factory: Callable[..., RedisServer], key_prefix: str
) -> None:
    server = redis_server_factory(appendonly=True)
    client = make_redis(server.url)
    client.hset(f"{key_prefix}:h", mapping={"a": "1", "b": "2"})
    client.rpush(f"{key_prefix}:l", "x", "y")
    client.close()
    port, pid = server.port, server.pid

    server.restart()
    assert server.port == port and server.pid != pid
    client = make_redis(server.url)
    try:
        assert client.hgetall(f"{key_prefix}:h") == {b"a": b"1", b"b": b"2"}
        assert client.lrange(f"{key_prefix}:l", 0, -1) == [b"x", b"y"]
    finally:
        client.close()


def test_redis_restart_without_appendonly_starts_empty(
    redis_server_factory: Callable[..., RedisServer], key_prefix: str
) -> None:
    """Control for the test above: persistence really comes from appendonly."""
    server = redis_server_factory(appendonly=False)
    client = make_redis(server.url)
    client.set(f"{key_prefix}:k", "v")
    client.close()
    server.restart()
    client = make_redis(server.url)
    try:
        assert client.get(f"{key_prefix}:k") is None
    finally:
        client.close()


def test_apache_broker_restarts_on_the_same_address_and_keeps_topics(
    kafka: KafkaEndpoint, unique_name: str
) -> None:
    """Fault tests restart brokers in place; a restarted Apache broker keeps its data."""
    from kafka.admin import KafkaAdminClient

    from recsys.kafka_io import ensure_topics
    from recsys_tools.infra.apache_kafka import ApacheKafka

    broker = kafka.server
    if not isinstance(broker, ApacheKafka):
        pytest.skip(f"session Kafka is {kafka.kind}, not a local Apache broker")
    topic = f"restart.{unique_name}"
    ensure_topics(kafka.bootstrap, {topic: 2})
    old_pid = broker.pid
    broker.restart()
    assert broker.bootstrap == kafka.bootstrap and broker.pid != old_pid
    assert old_pid is not None and not pid_alive(old_pid)
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_redis_fixture_uses_a_real_server(redis_client: object, key_prefix: str) -> None:
    import redis

    assert isinstance(redis_client, redis.Redis)
    redis_client.set(f"{key_prefix}:x", "1")
    info = redis_client.info("server")
    assert info["redis_version"]
    assert redis_client.get(f"{key_prefix}:x") == b"1"


def test_docker_mode_without_docker_fails_fast_naming_the_switch(tmp_path: Path) -> None:
    """No Docker engine (or no testcontainers) must not hang or leave processes behind."""
    line = one_line_error(run_infra(["up"], tmp_path, timeout=120, RECSYS_INFRA="docker"))
    assert "RECSYS_INFRA" in line
    assert not (tmp_path / "infra.json").exists()


def test_servers_are_stopped_when_the_test_run_fails(tmp_path: Path) -> None:
    """A failing (or crashing) test session must not leave brokers or redis-servers behind."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["recsys_tools.infra.pytest_plugin"]\n')
    (tmp_path / "test_fails.py").write_text(
        "import os\n"
        "def test_fails(tansu, redis_server):\n"
        "    pids = [tansu.server.pid, redis_server.server.pid]\n"
        "    open(os.environ['PIDS_OUT'], 'w').write(' '.join(map(str, pids)))\n"
        "    assert False, 'deliberate failure'\n"
    )
    pids_out = tmp_path / "pids.txt"
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    env["PIDS_OUT"] = str(pids_out)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberate failure" in result.stdout
    assert "infrastructure used" in result.stdout
    pids = [int(p) for p in pids_out.read_text().split()]
    assert len(pids) == 2
    assert not any(pid_alive(pid) for pid in pids)
