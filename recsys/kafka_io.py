"""Kafka clients: reachability check, producer and consumer factories, topic set-up.

Encodings live in :mod:`recsys.kafka_codec` (pure) and the consumer-group loop in
:mod:`recsys.consume`; this module is where the client configuration is chosen once.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from recsys.errors import ConfigError
from recsys.settings import ConsumerSettings, parse_bootstrap


def check_reachable(bootstrap: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a one-line message when no bootstrap server accepts a TCP connection."""
    servers = parse_bootstrap(bootstrap)
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError:
            continue
    raise ConfigError(
        f"cannot reach Kafka at {bootstrap}; set KAFKA_BOOTSTRAP_SERVERS to a reachable "
        "broker or start one with `recsys infra up`"
    )


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A producer tuned for durability: acks=all, retries, ordered per partition."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "acks": "all",
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
        "client_id": "recsys-producer",
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(bootstrap: str, group_id: str | None, *topics: str, **overrides: Any) -> Any:
    """A consumer that never auto-commits: callers commit after their side effects."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "recsys-consumer",
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def ensure_topics(
    bootstrap: str, topics: dict[str, int], replication: int = 1, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet (name -> partitions); idempotent.

    Returns only once every topic's partitions have leaders in the cluster
    metadata: a consumer that subscribes right after creation otherwise can join
    its group with no partitions assigned and wait a whole rebalance.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=parse_bootstrap(bootstrap), client_id="recsys-admin")
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
    its dead-letter topic and ``extra``: name -> partitions) unless told not to."""
    check_reachable(settings.bootstrap)
    if settings.create_topics:
        topics = {settings.topic: settings.topic_partitions, settings.dlq_topic: 1}
        ensure_topics(settings.bootstrap, {**topics, **(extra or {})})


def consumer_factory(settings: ConsumerSettings) -> Callable[[], Any]:
    """Builds the group's consumer: once at start, and again whenever the consume loop's
    watchdog replaces a stuck one."""

    def new_consumer() -> Any:
        return make_consumer(settings.bootstrap, settings.group_id, **settings.consumer_overrides())

    return new_consumer
