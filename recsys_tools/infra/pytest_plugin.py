"""Pytest fixtures for real Kafka and Redis on loopback (loaded from ``tests/conftest.py``).

Session-scoped servers (one Apache Kafka per run: it takes seconds to start),
function-scoped names so tests never share a topic, group or key prefix.
Selection for ``kafka``: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else
``RECSYS_TEST_KAFKA`` (``auto``|``apache``|``tansu``; ``auto`` = Apache when
java and mvn (or cached jars) exist, else Tansu). ``REDIS_URL`` if set, else a
local ``redis-server``. Servers stop in fixture finalizers, at exit, and with
the test process (parent-death signal), whatever the test outcome; the
terminal summary names what the run used.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from recsys.settings import env_choice
from recsys_tools.harness import stop_all_owned
from recsys_tools.infra.endpoints import KafkaEndpoint, KafkaKind, RedisEndpoint
from recsys_tools.infra.launcher import resolve_kafka_kind, start_kafka, start_redis
from recsys_tools.infra.redis_server import RedisServer

_USED: dict[str, str] = {}


def _record(role: str, description: str, address: str) -> None:
    _USED[role] = f"{description} at {address}"


def select_test_kafka_kind(env: dict[str, str] | None = None) -> KafkaKind:
    from recsys_tools.infra.apache_kafka import jars_present, kafka_version

    env = dict(os.environ if env is None else env)
    if env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return "external"
    choice = env_choice(env, "RECSYS_TEST_KAFKA", "auto", ("auto", "apache", "tansu", "docker"))
    if choice != "auto":
        return cast(KafkaKind, choice)
    cached = jars_present(kafka_version(env), env)
    return resolve_kafka_kind({**env, "RECSYS_KAFKA": "auto"}, jars_cached=cached)


def _stop(endpoint: KafkaEndpoint | RedisEndpoint) -> None:
    if endpoint.server is not None:
        with contextlib.suppress(Exception):
            endpoint.server.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaEndpoint]:
    """The session's Kafka; apply ``kafka.consumer_overrides`` to every consumer."""
    kind = select_test_kafka_kind()
    endpoint = start_kafka(kind, tmp_path_factory.mktemp("kafka"))
    _record("kafka", endpoint.description, endpoint.bootstrap)
    try:
        yield endpoint
    finally:
        _stop(endpoint)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaEndpoint]:
    """Always the embedded Tansu broker (for its smoke tests), whatever ``kafka`` is."""
    endpoint = start_kafka("tansu", tmp_path_factory.mktemp("tansu"))
    _record("tansu", endpoint.description, endpoint.bootstrap)
    try:
        yield endpoint
    finally:
        _stop(endpoint)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisEndpoint]:
    """The session's Redis: ``REDIS_URL``, else a local redis-server (``.server`` set)."""
    endpoint = start_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    _record("redis", endpoint.description, endpoint.url)
    try:
        yield endpoint
    finally:
        _stop(endpoint)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisEndpoint) -> str:
    return redis_server.url


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Private redis-servers for tests that stop, kill or restart them (stopped at test end)."""
    servers: list[RedisServer] = []

    def make(*, appendonly: bool = True, **kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", appendonly=appendonly, **kwargs)
        servers.append(server)
        server.start()
        _record("redis (private)", server.description, server.url)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``<test name>-<8 hex>``: readable in broker logs, unique across runs and workers."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(unique_name: str) -> str:
    return f"test.{unique_name}"


@pytest.fixture
def group_id(unique_name: str) -> str:
    return f"test-group.{unique_name}"


@pytest.fixture
def key_prefix(unique_name: str) -> str:
    """A ``recsys.store.keys.KeySchema`` prefix; keys look like ``<prefix>:...``."""
    return f"test-{unique_name}"


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str) -> Iterator[Any]:
    """A client for ``redis_url``; deletes every ``<key_prefix>:*`` key in teardown."""
    from recsys.redis_io import make_redis
    from recsys.store.keys import KeySchema

    client = make_redis(redis_url)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=KeySchema(key_prefix).prefix_pattern(), count=500))
        keys += [key_prefix] if client.exists(key_prefix) else []
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (CI cancelling the job) would skip finalizers and atexit; turn it into an exit.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def _terminate(signum: int, frame: object) -> None:
            stop_all_owned()
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _terminate)


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_all_owned()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _USED:
        return
    terminalreporter.section("infrastructure used")
    for role, what in _USED.items():
        terminalreporter.write_line(f"{role}: {what}")
    java = shutil.which("java")
    if "kafka" in _USED and "Apache" in _USED["kafka"] and java:
        terminalreporter.write_line(f"java: {java}")
