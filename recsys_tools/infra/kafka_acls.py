"""The Kafka ACLs each service needs, in one place: least privilege per user.

Every service logs in as its own SCRAM user (``KAFKA_SASL_USERNAME``) and is
granted only the topics and the consumer group it uses, read from the same
settings the service reads (``EVENTS_TOPIC``, ``SENTIMENT_GROUP_ID`` ...), so a
renamed topic moves its ACL with it. ``CREATE`` is granted only when the
service is told to create its topics (``*_CREATE_TOPICS``, default true for
local runs); in production the operator creates the topics and the services run
with ``*_CREATE_TOPICS=false``. Two more users are producers only: the
frontends (clicks) and the CRM (feedback). docs/operations.md lists the same
table; ``recsys kafka-acls`` prints or applies it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recsys.errors import ConfigError, InfraError
from recsys.settings import KafkaSecurity, parse_bootstrap

Resource = Literal["topic", "group"]
Operation = Literal["READ", "WRITE", "DESCRIBE", "CREATE"]

# The SCRAM user each client logs in as, by role; `recsys kafka-acls --user ROLE=NAME` renames.
DEFAULT_USERS: Mapping[str, str] = {
    "events": "recsys-events",
    "sentiment": "recsys-sentiment",
    "frontend": "recsys-frontend",
    "crm": "recsys-crm",
}


@dataclass(frozen=True)
class Grant:
    """ALLOW ``operations`` on one literal topic or group to ``User:<user>`` from any host."""

    user: str
    resource: Resource
    name: str
    operations: tuple[Operation, ...]

    @property
    def principal(self) -> str:
        return f"User:{self.user}"

    def describe(self) -> str:
        return (
            f"{self.principal:<24} {self.resource:<6} {self.name:<32} {','.join(self.operations)}"
        )

    def kafka_acls_command(self, bootstrap: str) -> str:
        """The same grant as an ``kafka-acls.sh`` line, for operators without this tool."""
        argv = [
            "kafka-acls.sh", "--bootstrap-server", bootstrap,
            "--command-config", "admin.properties", "--add",
            "--allow-principal", self.principal, "--allow-host", "*",
        ]  # fmt: skip
        for operation in self.operations:
            argv += ["--operation", operation.capitalize()]
        argv += [f"--{self.resource}", self.name]
        return shlex.join(argv)


def service_grants(
    env: Mapping[str, str] | None = None, users: Mapping[str, str] | None = None
) -> list[Grant]:
    """Every grant, for the topic and group names ``env`` configures (defaults otherwise)."""
    from services.events.config import load_settings as load_events
    from services.sentiment.config import load_settings as load_sentiment

    env = {} if env is None else env
    names = {**DEFAULT_USERS, **(users or {})}
    events = load_events(env).consumer
    sentiment_settings = load_sentiment(env)
    sentiment = sentiment_settings.consumer
    grants = [
        Grant(names["events"], "topic", events.topic, ("READ", "DESCRIBE")),
        Grant(names["events"], "group", events.group_id, ("READ",)),
        Grant(names["events"], "topic", events.dlq_topic, ("WRITE", "DESCRIBE")),
        Grant(names["sentiment"], "topic", sentiment.topic, ("READ", "DESCRIBE")),
        Grant(names["sentiment"], "group", sentiment.group_id, ("READ",)),
        Grant(names["sentiment"], "topic", sentiment_settings.output_topic, ("WRITE", "DESCRIBE")),
        Grant(names["sentiment"], "topic", sentiment.dlq_topic, ("WRITE", "DESCRIBE")),
        Grant(names["frontend"], "topic", events.topic, ("WRITE", "DESCRIBE")),
        Grant(names["crm"], "topic", sentiment.topic, ("WRITE", "DESCRIBE")),
    ]
    if events.create_topics:
        grants += [
            Grant(names["events"], "topic", topic, ("CREATE",))
            for topic in (events.topic, events.dlq_topic)
        ]
    if sentiment.create_topics:
        grants += [
            Grant(names["sentiment"], "topic", topic, ("CREATE",))
            for topic in (sentiment.topic, sentiment_settings.output_topic, sentiment.dlq_topic)
        ]
    return grants


def to_kafka_python(grants: Sequence[Grant]) -> list[Any]:
    """The grants as kafka-python ``ACL`` objects, one per operation."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    return [
        ACL(
            principal=grant.principal,
            host="*",
            operation=ACLOperation[operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                kinds[grant.resource], grant.name, ACLResourcePatternType.LITERAL
            ),
        )
        for grant in grants
        for operation in grant.operations
    ]


def apply_grants(
    bootstrap: str, grants: Sequence[Grant], security: KafkaSecurity, timeout_s: float = 15.0
) -> int:
    """Create the ACLs as ``security``'s user (a super user or one allowed ALTER on the
    cluster); idempotent, since the broker keeps one copy of an identical ACL. Returns the
    number of ACLs sent; any the broker refused raise InfraError naming the first error."""
    from kafka.admin import KafkaAdminClient

    from recsys.kafka_io import security_config

    acls = to_kafka_python(grants)
    admin = KafkaAdminClient(
        bootstrap_servers=parse_bootstrap(bootstrap),
        client_id="recsys-acl-admin",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **security_config(security),
    )
    try:
        result = admin.create_acls(acls)
    finally:
        admin.close()
    failed = result.get("failed") or []
    if failed:
        raise InfraError(f"the broker refused {len(failed)} of {len(acls)} ACLs: {failed[0]!r}")
    return len(acls)


def parse_users(values: Sequence[str]) -> dict[str, str]:
    """``ROLE=NAME`` pairs from the command line, roles as in :data:`DEFAULT_USERS`."""
    users: dict[str, str] = {}
    for value in values:
        role, sep, name = value.partition("=")
        if not sep or role not in DEFAULT_USERS or not name.strip():
            roles = ", ".join(DEFAULT_USERS)
            raise ConfigError(f"--user {value!r} is not ROLE=NAME with ROLE one of {roles}")
        users[role] = name.strip()
    return users
