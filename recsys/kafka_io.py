"""Kafka clients: reachability check, producer and consumer factories, topic set-up.

Encodings live in :mod:`recsys.kafka_codec` (pure) and the consumer-group loop in
:mod:`recsys.consume`; this module is where the client configuration is chosen once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from recsys.errors import ConfigError
from recsys.settings import ConsumerSettings, KafkaSecurity, parse_bootstrap


def security_config(security: KafkaSecurity | None) -> dict[str, Any]:
    """kafka-python keyword arguments for ``security``; empty for PLAINTEXT, so a client
    built without security settings is configured exactly as before they existed."""
    if security is None or security.protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        config.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    if security.protocol == "SASL_SSL" and security.ssl_cafile:
        config["ssl_cafile"] = security.ssl_cafile
    return config


def check_reachable(
    bootstrap: str, timeout_s: float = 5.0, *, security: KafkaSecurity | None = None
) -> None:
    """Fail fast with a one-line message when no bootstrap server accepts a TCP connection.

    With SASL it also logs in once (:func:`check_login`): kafka-python's clients retry a
    rejected login in the background, so a wrong password would otherwise look like a hang.
    """
    servers = parse_bootstrap(bootstrap)
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                break
        except OSError:
            continue
    else:
        raise ConfigError(
            f"cannot reach Kafka at {bootstrap}; set KAFKA_BOOTSTRAP_SERVERS to a reachable "
            "broker or start one with `recsys infra up`"
        )
    if security is not None and security.sasl:
        check_login(bootstrap, security, timeout_s=max(timeout_s, 10.0))


def check_login(bootstrap: str, security: KafkaSecurity, timeout_s: float = 10.0) -> None:
    """Log in with ``security`` and ask for metadata; a rejected login is a ConfigError
    naming the user and the variables to check (never the password).

    kafka-python 3 retries a rejected login until its bootstrap timeout and then reports
    only a timeout; the rejection itself, when the broker sends one, is in what its
    connection code logs, which is where this looks for it (a handler on the ``kafka``
    logger, for this call only). A broker that just closes the connection after the SASL
    exchange (it does so for repeated failures) ends as a timeout: the message then names
    the same variables, since a reachable broker that never lets us in is a login problem.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    rejected = _SaslFailureSeen()
    manager_log = logging.getLogger("kafka")
    manager_log.addHandler(rejected)
    who = f"{security.sasl_mechanism} user {security.username!r}"
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=parse_bootstrap(bootstrap),
            client_id="recsys-login-check",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **security_config(security),
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
    except KafkaError as exc:
        if rejected.seen or isinstance(exc, SaslAuthenticationFailedError):
            raise ConfigError(
                f"Kafka at {bootstrap} rejected the login of {who}; check KAFKA_SASL_USERNAME, "
                "KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
            ) from None
        raise ConfigError(
            f"cannot log in to Kafka at {bootstrap} as {who} within {timeout_s:.0f} s "
            f"({type(exc).__name__}); check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, "
            "KAFKA_SASL_MECHANISM and KAFKA_SECURITY_PROTOCOL against the broker's listener"
        ) from None
    finally:
        manager_log.removeHandler(rejected)


class _SaslFailureSeen(logging.Handler):
    """Remembers whether kafka-python logged a SaslAuthenticationFailedError."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        from kafka.errors import SaslAuthenticationFailedError

        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(arg, SaslAuthenticationFailedError) for arg in args):
            self.seen = True


def check_topic_access(
    bootstrap: str, topics: Iterable[str], security: KafkaSecurity, timeout_s: float = 10.0
) -> None:
    """Fail fast when the broker hides one of ``topics`` from this user.

    Without it a service whose user lacks an ACL on its input topic waits for that topic
    forever (the consumer sees no metadata and no error): a ConfigError at start names the
    topics and the user instead.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=parse_bootstrap(bootstrap),
        client_id="recsys-acl-check",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **security_config(security),
    )
    try:
        infos = admin.describe_topics(sorted(set(topics)))
    finally:
        admin.close()
    denied = sorted(str(i.get("name")) for i in infos if i.get("error_code") == 29)
    if denied:
        raise ConfigError(
            f"Kafka user {security.username!r} is not authorized for topic(s) {', '.join(denied)} "
            "(TopicAuthorizationFailed); grant the ACLs `recsys kafka-acls` prints, or fix "
            "the *_TOPIC settings"
        )


def make_producer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **overrides: Any
) -> Any:
    """A producer tuned for durability: acks=all, retries, ordered per partition."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "acks": "all",
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
        "client_id": "recsys-producer",
        **security_config(security),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(
    bootstrap: str,
    group_id: str | None,
    *topics: str,
    security: KafkaSecurity | None = None,
    **overrides: Any,
) -> Any:
    """A consumer that never auto-commits: callers commit after their side effects."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "recsys-consumer",
        **security_config(security),
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    replication: int = 1,
    timeout_s: float = 30.0,
    *,
    security: KafkaSecurity | None = None,
) -> None:
    """Create the topics that do not exist yet (name -> partitions); idempotent.

    Returns only once every topic's partitions have leaders in the cluster
    metadata: a consumer that subscribes right after creation otherwise can join
    its group with no partitions assigned and wait a whole rebalance.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=parse_bootstrap(bootstrap),
        client_id="recsys-admin",
        **security_config(security),
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, num_partitions=parts, replication_factor=replication)
            for name, parts in topics.items()
            if name not in existing
        ]
        if new:
            # Another process may have created them in between: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        deadline = time.monotonic() + timeout_s
        pending = set(topics)
        while pending:
            for info in admin.describe_topics(sorted(pending)):
                partitions = info.get("partitions") or []
                if (
                    info.get("error_code") == 0
                    and partitions
                    and all(
                        p.get("error_code") == 0 and p.get("leader_id", -1) >= 0 for p in partitions
                    )
                ):
                    pending.discard(info["name"])
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready after {timeout_s:.0f}s: {sorted(pending)}")
            time.sleep(0.1)
    finally:
        admin.close()


def wait_for_partitions(
    consumer: Any,
    topic: str,
    timeout_s: float | None = None,
    stop: Any = None,
    poll_s: float = 0.2,
) -> bool:
    """Block until ``consumer``'s own metadata shows leaders for every partition of ``topic``.

    It must be the consumer that is about to subscribe: a group leader whose
    metadata lacks the topic at join time logs "No partition metadata for
    topic" and assigns nothing until its next metadata refresh, even when the
    cluster (as :func:`ensure_topics` checks it) already has the leaders.
    Returns False when ``stop`` (a ``threading.Event``) is set or ``timeout_s``
    passes first.
    """
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while stop is None or not stop.is_set():
        try:
            partitions = consumer.partitions_for_topic(topic)
        except KafkaError:
            partitions = None
        if partitions:
            cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
            leaders = (
                [cluster.leader_for_partition(TopicPartition(topic, p)) for p in partitions]
                if cluster is not None
                else []
            )
            if all(leader is not None and leader >= 0 for leader in leaders):
                return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if stop is not None:
            stop.wait(poll_s)
        else:
            time.sleep(poll_s)
    return False


def prepare_topics(settings: ConsumerSettings, extra: Mapping[str, int] | None = None) -> None:
    """Fail fast when Kafka is unreachable, then create the consumer's topics (its input,
    its dead-letter topic and ``extra``: name -> partitions) unless told not to; with SASL,
    also fail fast when the user may not see one of them."""
    check_reachable(settings.bootstrap, security=settings.security)
    if settings.create_topics:
        topics = {settings.topic: settings.topic_partitions, settings.dlq_topic: 1}
        ensure_topics(settings.bootstrap, {**topics, **(extra or {})}, security=settings.security)
    if settings.security.sasl:
        wanted = [settings.topic, settings.dlq_topic, *(extra or {})]
        check_topic_access(settings.bootstrap, wanted, settings.security)


def consumer_factory(settings: ConsumerSettings) -> Callable[[], Any]:
    """Builds the group's consumer: once at start, and again whenever the consume loop's
    watchdog replaces a stuck one."""

    def new_consumer() -> Any:
        return make_consumer(
            settings.bootstrap,
            settings.group_id,
            security=settings.security,
            **settings.consumer_overrides(),
        )

    return new_consumer
