"""Kafka and Redis in containers via ``testcontainers`` (opt-in: RECSYS_INFRA=docker).

Imported lazily so the package never needs Docker; a missing package or engine
is a one-line ConfigError naming the alternatives.
"""

from __future__ import annotations

from typing import Any

from recsys.errors import ConfigError
from recsys_tools.infra.endpoints import KafkaEndpoint, RedisEndpoint

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"
REDIS_IMAGE = "redis:7.2"

_HINT = "unset RECSYS_INFRA to run Kafka and Redis as local processes instead"


def _testcontainers(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"testcontainers.{module}")
    except ImportError:
        raise ConfigError(
            "RECSYS_INFRA=docker needs the testcontainers package "
            f"(pip install 'recsys-realtime[docker]'); or {_HINT}"
        ) from None


def _docker_error(exc: Exception) -> ConfigError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"RECSYS_INFRA=docker but no Docker engine is usable ({first}); {_HINT}")


class DockerKafka:
    """A containerised single-node Kafka; ``stop()`` removes the container."""

    kind = "docker"

    def __init__(self, image: str = KAFKA_IMAGE) -> None:
        module = _testcontainers("kafka")
        self.image = image
        try:
            self._container = module.KafkaContainer(image).with_kraft()
        except Exception as exc:  # the client connects to the engine on construction
            raise _docker_error(exc) from None
        self.bootstrap = ""

    def start(self) -> None:
        try:
            self._container.start()
        except Exception as exc:  # docker.errors.DockerException and friends
            raise _docker_error(exc) from None
        self.bootstrap = str(self._container.get_bootstrap_server())

    def stop(self) -> None:
        self._container.stop()

    def kill(self) -> None:
        self._container.stop()

    def restart(self) -> None:
        raise ConfigError("restarting a Docker Kafka on the same port is not supported; " + _HINT)

    def endpoint(self) -> KafkaEndpoint:
        description = f"Kafka container {self.image}"
        return KafkaEndpoint(self.bootstrap, "docker", description, {}, server=self)


class DockerRedis:
    def __init__(self, image: str = REDIS_IMAGE) -> None:
        module = _testcontainers("redis")
        self.image = image
        try:
            self._container = module.RedisContainer(image)
        except Exception as exc:
            raise _docker_error(exc) from None
        self.url = ""

    def start(self) -> None:
        try:
            self._container.start()
        except Exception as exc:
            raise _docker_error(exc) from None
        host = self._container.get_container_host_ip()
        port = self._container.get_exposed_port(6379)
        self.url = f"redis://{host}:{port}/0"

    def stop(self) -> None:
        self._container.stop()

    def kill(self) -> None:
        self._container.stop()

    def restart(self) -> None:
        raise ConfigError("restarting a Docker Redis on the same port is not supported; " + _HINT)

    def endpoint(self) -> RedisEndpoint:
        return RedisEndpoint(self.url, f"Redis container {self.image}", server=self)
