"""Kafka topic names, message encodings and client factories.

Records carry either protobuf binary or the canonical proto3 JSON mapping of the
same message; the ``content-type`` header tells them apart (absent header means
protobuf, the compact default). Decoding never raises anything but
:class:`DecodeError`, whose ``reason`` goes into the dead-letter header.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from recsys.errors import ConfigError
from recsys.settings import parse_bootstrap

CONTENT_TYPE_HEADER = "content-type"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
REASON_HEADER = "x-dead-letter-reason"

# Topic names (overridable per service through its own env settings).
TOPIC_CLICKS = "recsys.clicks.v1"
TOPIC_CLICKS_DLQ = "recsys.clicks.dlq.v1"
TOPIC_FEEDBACK = "recsys.feedback.v1"
TOPIC_FEEDBACK_SCORED = "recsys.feedback.scored.v1"
TOPIC_FEEDBACK_DLQ = "recsys.feedback.dlq.v1"

M = TypeVar("M", bound=Message)
Headers = Sequence[tuple[str, bytes]]


class DecodeError(ValueError):
    """A record's bytes could not be turned into the expected message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(message: Message, content_type: str = CONTENT_TYPE_PROTOBUF) -> tuple[bytes, Headers]:
    """Serialise ``message``; return the value bytes and the headers to send with them."""
    if content_type == CONTENT_TYPE_PROTOBUF:
        value = message.SerializeToString()
    elif content_type == CONTENT_TYPE_JSON:
        value = json_format.MessageToJson(message, indent=None).encode("utf-8")
    else:
        raise ValueError(f"unsupported content type {content_type!r}")
    return value, [(CONTENT_TYPE_HEADER, content_type.encode("ascii"))]


def header_value(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key.lower() == name and value is not None:
            try:
                return value.decode("ascii").strip().lower()
            except UnicodeDecodeError:
                return None
    return None


def decode(
    value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None, cls: type[M]
) -> M:
    """Parse a record value into ``cls`` according to its content-type header."""
    if value is None:
        raise DecodeError("empty record value (tombstone)")
    content_type = header_value(headers, CONTENT_TYPE_HEADER) or CONTENT_TYPE_PROTOBUF
    content_type = content_type.split(";")[0].strip()
    message = cls()
    if content_type == CONTENT_TYPE_PROTOBUF:
        try:
            message.ParseFromString(value)
        except (ProtoDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(f"invalid protobuf: {exc}") from None
    elif content_type == CONTENT_TYPE_JSON:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 in JSON record at byte {exc.start}") from None
        try:
            json_format.Parse(text, message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON for {cls.DESCRIPTOR.full_name}: {exc}") from None
    else:
        raise DecodeError(f"unsupported content-type {content_type!r}")
    return message


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
    import time

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
