"""Helpers to build frozen settings objects from an environment mapping.

Services call these from their ``config.py`` with ``os.environ`` (or a dict in
tests). Every failure is a :class:`~recsys.errors.ConfigError` whose one-line
message names the variable and what a valid value looks like, so a bad
deployment fails at start instead of at the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlparse

from recsys.errors import ConfigError

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def env_str(env: Mapping[str, str], name: str, default: str, *, allow_empty: bool = False) -> str:
    value = env.get(name, default).strip()
    if not value and not allow_empty:
        raise ConfigError(f"{name} must not be empty (default: {default!r})")
    return value


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        value = default
    else:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer (default: {default})") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be <= {maximum}")
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        value = default
    else:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number (default: {default})") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be <= {maximum}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def parse_bootstrap(value: str, name: str = "KAFKA_BOOTSTRAP_SERVERS") -> list[str]:
    """Split and validate a ``host:port[,host:port]`` list."""
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers:
        raise ConfigError(f"{name} is empty; set it to host:port[,host:port]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {server!r} is not host:port (e.g. 127.0.0.1:9092)")
    return servers


def validate_redis_url(value: str, name: str = "REDIS_URL") -> str:
    """Accept ``redis://``, ``rediss://`` and ``unix://`` URLs; reject anything else."""
    parsed = urlparse(value)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{name}={value!r} is not a Redis URL; use redis://host:port/db, rediss:// or unix://"
        )
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigError(f"{name}={value!r} has no host; use redis://host:port/db")
    try:
        _ = parsed.port
    except ValueError:
        raise ConfigError(f"{name}={value!r} has an invalid port") from None
    return value


# kafka-python consumer timeouts a deployment may tune (0 = the client's default); Tansu
# needs short ones (recsys_tools.infra.endpoints.TANSU_CONSUMER_OVERRIDES).
KAFKA_CONSUMER_TIMEOUTS = (
    "max_poll_interval_ms",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "fetch_max_wait_ms",
)


def kafka_consumer_env(env: Mapping[str, str]) -> dict[str, int]:
    """The ``KAFKA_*`` consumer settings every consuming service reads, by field name."""
    values = {
        name: env_int(env, f"KAFKA_{name.upper()}", 0, minimum=0)
        for name in KAFKA_CONSUMER_TIMEOUTS
    }
    # Short, so a group that assigned nothing on a fresh topic heals in seconds.
    values["metadata_max_age_ms"] = env_int(
        env, "KAFKA_METADATA_MAX_AGE_MS", 5000, minimum=500, maximum=3_600_000
    )
    return values


class KafkaConsumerSettings(Protocol):
    """The fields :func:`kafka_consumer_env` fills in a service's settings."""

    @property
    def max_poll_interval_ms(self) -> int: ...
    @property
    def session_timeout_ms(self) -> int: ...
    @property
    def heartbeat_interval_ms(self) -> int: ...
    @property
    def fetch_max_wait_ms(self) -> int: ...
    @property
    def metadata_max_age_ms(self) -> int: ...


def kafka_consumer_overrides(
    settings: KafkaConsumerSettings, client_id: str, max_poll_records: int
) -> dict[str, object]:
    """kafka-python consumer keyword arguments from a service's settings: the timeouts
    that are set (non-zero) plus the metadata refresh, poll size and client id."""
    overrides: dict[str, object] = {
        "max_poll_records": max_poll_records,
        "client_id": client_id,
        "metadata_max_age_ms": settings.metadata_max_age_ms,
    }
    for key in KAFKA_CONSUMER_TIMEOUTS:
        value = getattr(settings, key)
        if value > 0:
            overrides[key] = value
    return overrides
