"""Helpers to build frozen settings objects from an environment mapping.

Services call these from their ``config.py`` with ``os.environ`` (or a dict in
tests). Every failure is a :class:`~recsys.errors.ConfigError` whose one-line
message names the variable and what a valid value looks like, so a bad
deployment fails at start instead of at the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

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


SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``.

    The addresses are the Sentinels', not a Redis server's: the client asks them which
    server is the primary of ``service`` now, and again after a failover. The user and
    password are the data user's (the one the primary and its replicas know).
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(value: str, name: str = "REDIS_URL") -> SentinelUrl:
    """Parse a ``redis+sentinel://`` URL (hand-split: urlparse takes one host only)."""
    shown = redacted_url(value)
    scheme, sep, rest = value.partition("://")
    if scheme != SENTINEL_SCHEME or not sep:
        raise ConfigError(f"{name}={shown!r} is not a {SENTINEL_SCHEME}:// URL")
    rest = rest.partition("?")[0]
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for server in filter(None, (h.strip() for h in hosts.split(","))):
        host, colon, port = server.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={shown!r}: {server!r} is not a Sentinel host:port")
        sentinels.append((host, int(port)))
    if not sentinels:
        raise ConfigError(f"{name}={shown!r} names no Sentinel; use {_SENTINEL_FORM}")
    service, _, db = path.partition("/")
    if not service:
        raise ConfigError(f"{name}={shown!r} names no monitored service; use {_SENTINEL_FORM}")
    if db and not db.isdigit():
        raise ConfigError(f"{name}={shown!r}: database {db!r} is not a number")
    return SentinelUrl(tuple(sentinels), unquote(service), int(db or 0), username, password)


_SENTINEL_FORM = f"{SENTINEL_SCHEME}://host:port[,host:port]/service[/db]"


def validate_redis_url(value: str, name: str = "REDIS_URL") -> str:
    """Accept ``redis://``, ``rediss://``, ``unix://`` and ``redis+sentinel://`` URLs."""
    if value.startswith(f"{SENTINEL_SCHEME}://"):
        parse_sentinel_url(value, name)
        return value
    parsed = urlparse(value)
    shown = redacted_url(value)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{name}={shown!r} is not a Redis URL; use redis://host:port/db, rediss://, "
            f"unix:// or {_SENTINEL_FORM}"
        )
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigError(f"{name}={shown!r} has no host; use redis://host:port/db")
    try:
        _ = parsed.port
    except ValueError:
        raise ConfigError(f"{name}={shown!r} has an invalid port") from None
    return value


def redis_wait_from_env(env: Mapping[str, str], *, cluster: bool) -> tuple[int, int]:
    """(REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS): how many replicas a write batch must
    reach before the consumer commits its offsets, and how long one WAIT may block.

    0 replicas (the default) sends no WAIT: a replica-less Redis behaves as before. Not
    with REDIS_CLUSTER (WAIT answers for one node only).
    """
    replicas = env_int(env, "REDIS_WAIT_REPLICAS", 0, minimum=0, maximum=16)
    timeout_ms = env_int(env, "REDIS_WAIT_TIMEOUT_MS", 1000, minimum=1, maximum=60_000)
    if replicas and cluster:
        raise ConfigError(
            "REDIS_WAIT_REPLICAS is not supported with REDIS_CLUSTER=true (WAIT is per node); "
            "use a primary with replicas behind Sentinel (redis+sentinel://)"
        )
    return replicas, timeout_ms


def redacted_url(url: str) -> str:
    """``url`` with its password (``user:password@`` or ``?password=``) shown as ``***``.

    REDIS_URL carries the service's ACL password (docs/redis-schema.md, "Access
    control"); every message and log line that names the URL goes through this.
    """
    parsed = urlparse(url)
    netloc, query = parsed.netloc, parsed.query
    if parsed.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    parts = query.split("&")
    for i, part in enumerate(parts):
        if part.partition("=")[0].lower() == "password":
            parts[i] = "password=***"
    query = "&".join(parts)
    if (netloc, query) == (parsed.netloc, parsed.query):
        return url
    # Rebuilt by hand: urlunparse drops the empty authority of ``unix:///path``.
    return (
        f"{parsed.scheme}://{netloc}{parsed.path}"
        + (f";{parsed.params}" if parsed.params else "")
        + (f"?{query}" if query else "")
        + (f"#{parsed.fragment}" if parsed.fragment else "")
    )


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of a process authenticates: one object, read once at start.

    The default (PLAINTEXT, no user) is what a local or test broker without
    authentication needs. With SASL each service logs in as its own user, so the
    broker's ACLs can give it only its own topics and group (docs/operations.md).
    The password is left out of ``repr`` so that logging the settings never leaks it.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    ssl_cafile: str = ""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


def load_kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """``KAFKA_SECURITY_PROTOCOL`` and, for SASL, ``KAFKA_SASL_*`` (+ ``KAFKA_SSL_CAFILE``).

    A SASL protocol without a user or password fails here, at start, naming the
    variable: otherwise the first symptom would be a consumer retrying its login forever.
    """
    raw = env.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if raw not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={raw!r} must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    if raw == "PLAINTEXT":
        stray = [
            name
            for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
            if env.get(name, "").strip()
        ]
        if stray:
            raise ConfigError(
                f"{stray[0]} is set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT; "
                "set KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL"
            )
        return KafkaSecurity()
    mechanism = env.get("KAFKA_SASL_MECHANISM", "").strip().upper() or "SCRAM-SHA-512"
    if mechanism not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(
            f"KAFKA_SASL_MECHANISM={mechanism!r} must be one of {', '.join(KAFKA_SASL_MECHANISMS)}"
        )
    username = env.get("KAFKA_SASL_USERNAME", "").strip()
    if not username:
        raise ConfigError(f"KAFKA_SASL_USERNAME must be set when KAFKA_SECURITY_PROTOCOL={raw}")
    password = env.get("KAFKA_SASL_PASSWORD", "")
    if not password:
        raise ConfigError(f"KAFKA_SASL_PASSWORD must be set when KAFKA_SECURITY_PROTOCOL={raw}")
    cafile = env.get("KAFKA_SSL_CAFILE", "").strip()
    if cafile and raw != "SASL_SSL":
        raise ConfigError(f"KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL={raw} has no TLS")
    return KafkaSecurity(
        protocol=raw,
        sasl_mechanism=mechanism,
        username=username,
        password=password,
        ssl_cafile=cafile,
    )


# kafka-python consumer timeouts a deployment may tune (0 = the client's default); Tansu
# needs short ones (recsys_tools.infra.endpoints.TANSU_CONSUMER_OVERRIDES).
KAFKA_CONSUMER_TIMEOUTS = (
    "max_poll_interval_ms",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "fetch_max_wait_ms",
)


@dataclass(frozen=True)
class ConsumerSettings:
    """What the consume loop (:mod:`recsys.consume`) needs from any consuming service.

    One object for every consumer, read from the environment by
    :func:`load_consumer_settings` with the service's own prefix (``EVENTS_TOPIC``,
    ``SENTIMENT_TOPIC`` ...), so a new consumer gets the same knobs, names and
    validation without writing them again.
    """

    bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    topic: str = ""
    dlq_topic: str = ""
    group_id: str = ""
    client_id: str = "recsys-consumer"
    max_poll_records: int = 500
    poll_timeout_ms: int = 500
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    # How often the loop probes its dependencies and the watchdog while idle or degraded.
    health_check_interval_s: float = 5.0
    # Close and rebuild the Kafka consumer after this long stuck in a group join, or
    # assigned with lag but receiving nothing (0 disables); see docs/faults.md.
    stall_timeout_s: float = 20.0
    create_topics: bool = True
    topic_partitions: int = 3
    # Optional kafka-python consumer timeouts (0 = client default); Tansu needs short ones.
    max_poll_interval_ms: int = 0
    session_timeout_ms: int = 0
    heartbeat_interval_ms: int = 0
    # How long a fetch may wait on the broker for new records (0 = 500 ms, the client's
    # default); brokers that only answer at the deadline need a short one (Tansu: 25).
    fetch_max_wait_ms: int = 0
    # How often the consumer refreshes metadata even when nothing failed: short, so a
    # group that assigned nothing on a fresh topic heals in seconds, not 5 minutes.
    metadata_max_age_ms: int = 5000
    # How the consumer, the service's producer and its admin client log in (KAFKA_SECURITY_*).
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def consumer_overrides(self) -> dict[str, object]:
        """kafka-python consumer keyword arguments: the timeouts that are set (non-zero)
        plus the metadata refresh, poll size and client id."""
        overrides: dict[str, object] = {
            "max_poll_records": self.max_poll_records,
            "client_id": self.client_id,
            "metadata_max_age_ms": self.metadata_max_age_ms,
        }
        for key in KAFKA_CONSUMER_TIMEOUTS:
            value = getattr(self, key)
            if value > 0:
                overrides[key] = value
        return overrides


def load_consumer_settings(
    env: Mapping[str, str], prefix: str, defaults: ConsumerSettings
) -> ConsumerSettings:
    """The consume-loop settings of the service whose variables start with ``prefix``.

    ``defaults`` is that service's own default object (the one its settings dataclass
    holds), so each default is written once; every variable is documented with the
    service (docs/events.md, docs/sentiment.md).
    """
    d = defaults
    bootstrap = env_str(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap)
    parse_bootstrap(bootstrap)
    backoff_initial = env_float(
        env, f"{prefix}_BACKOFF_INITIAL_S", d.backoff_initial_s, minimum=0.01
    )
    return ConsumerSettings(
        bootstrap=bootstrap,
        topic=env_str(env, f"{prefix}_TOPIC", d.topic),
        dlq_topic=env_str(env, f"{prefix}_DLQ_TOPIC", d.dlq_topic),
        group_id=env_str(env, f"{prefix}_GROUP_ID", d.group_id),
        client_id=d.client_id,
        max_poll_records=env_int(
            env, f"{prefix}_MAX_POLL_RECORDS", d.max_poll_records, minimum=1, maximum=100_000
        ),
        poll_timeout_ms=env_int(
            env, f"{prefix}_POLL_TIMEOUT_MS", d.poll_timeout_ms, minimum=10, maximum=60_000
        ),
        backoff_initial_s=backoff_initial,
        backoff_max_s=env_float(
            env, f"{prefix}_BACKOFF_MAX_S", d.backoff_max_s, minimum=backoff_initial
        ),
        health_check_interval_s=env_float(
            env, f"{prefix}_HEALTH_CHECK_INTERVAL_S", d.health_check_interval_s, minimum=0.1
        ),
        stall_timeout_s=env_float(env, f"{prefix}_STALL_TIMEOUT_S", d.stall_timeout_s, minimum=0.0),
        create_topics=env_bool(env, f"{prefix}_CREATE_TOPICS", d.create_topics),
        topic_partitions=env_int(
            env, f"{prefix}_TOPIC_PARTITIONS", d.topic_partitions, minimum=1, maximum=1000
        ),
        security=load_kafka_security(env),
        **kafka_consumer_env(env),
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
