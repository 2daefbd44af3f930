"""Least privilege on a real secured Apache Kafka: SASL/SCRAM logins and per-service ACLs.

One broker for the module, in secured mode (SCRAM-SHA-512 on SASL_PLAINTEXT, the
StandardAuthorizer, nothing allowed without an ACL), its topics created and the ACLs of
``recsys_tools.infra.kafka_acls`` applied by the admin, as an operator would with
``recsys kafka-acls --apply`` and every ``*_CREATE_TOPICS=false``. The events service
then runs as a subprocess with only its own user's ``KAFKA_SASL_*``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.errors import ConfigError
from recsys.events.v1 import events_pb2
from recsys.kafka_codec import (
    REASON_HEADER,
    TOPIC_CLICKS,
    TOPIC_CLICKS_DLQ,
    TOPIC_FEEDBACK,
    TOPIC_FEEDBACK_DLQ,
    TOPIC_FEEDBACK_SCORED,
    encode,
)
from recsys.kafka_io import (
    check_reachable,
    check_topic_access,
    ensure_topics,
    make_consumer,
    make_producer,
)
from recsys.store import KeySchema
from recsys_tools.harness import QUIET_ENV, Service, free_port, wait_for, wait_serving
from recsys_tools.infra.apache_kafka import ApacheKafka, ScramConfig
from recsys_tools.infra.kafka_acls import DEFAULT_USERS, apply_grants, service_grants

pytestmark = pytest.mark.integration

EVENTS = DEFAULT_USERS["events"]
SENTIMENT = DEFAULT_USERS["sentiment"]
FRONTEND = DEFAULT_USERS["frontend"]
# How production runs: the operator created the topics, so no service may create any.
NO_CREATE = {"EVENTS_CREATE_TOPICS": "false", "SENTIMENT_CREATE_TOPICS": "false"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """The secured broker with the services' topics and ACLs, started once for the module."""
    try:
        broker = ApacheKafka(
            tmp_path_factory.mktemp("kafka-acl"),
            scram=ScramConfig(users={u: secrets.token_hex(12) for u in DEFAULT_USERS.values()}),
        )
    except ConfigError as exc:  # no java: nothing to run the broker with
        pytest.skip(str(exc))
    broker.start()
    try:
        admin = broker.security()
        topics = {TOPIC_CLICKS: 2, TOPIC_CLICKS_DLQ: 1, TOPIC_FEEDBACK: 1}
        ensure_topics(broker.bootstrap, {**topics, TOPIC_FEEDBACK_SCORED: 1}, security=admin)
        ensure_topics(broker.bootstrap, {TOPIC_FEEDBACK_DLQ: 1}, security=admin)
        apply_grants(broker.bootstrap, service_grants(NO_CREATE), admin)
        yield broker
    finally:
        broker.stop()


def sasl_env(broker: ApacheKafka, user: str, password: str | None = None) -> dict[str, str]:
    """The variables a deployment sets for ``user`` (from its own Secret)."""
    security = broker.security(user, password)
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_SECURITY_PROTOCOL": security.protocol,
        "KAFKA_SASL_MECHANISM": security.sasl_mechanism,
        "KAFKA_SASL_USERNAME": security.username,
        "KAFKA_SASL_PASSWORD": security.password,
    }


def events_process(env: dict[str, str], redis_url: str, prefix: str, log_dir: Path) -> Service:
    """The events service with its defaults (recsys.clicks.v1, group recsys-events)."""
    full_env = {
        **QUIET_ENV,
        **env,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "EVENTS_CREATE_TOPICS": "false",
        "EVENTS_POLL_TIMEOUT_MS": "100",
    }
    return Service(
        "events", ["services.events"], full_env, log_path=log_dir / "events.log", port=free_port()
    )


def exit_code(service: Service, timeout_s: float) -> int:
    """The service's exit status; it must exit on its own (a failed start, not a hang)."""
    wait_for(lambda: not service.running(), timeout_s, "the service to exit", service.log_text)
    code = service.returncode()
    assert code is not None
    return code


def click(user: str, event_id: str) -> events_pb2.ClickEvent:
    event = events_pb2.ClickEvent(
        event_id=event_id, user_id=user, item_id="item-1", event_type=events_pb2.EVENT_TYPE_CLICK
    )
    event.event_time.FromNanoseconds(time.time_ns() - 10**9)
    return event


def test_events_user_consumes_clicks_and_dead_letters_a_bad_record(
    secured: ApacheKafka, redis_url: str, key_prefix: str, tmp_path: Path, redis_client: Any
) -> None:
    """The events service logged in as its own user applies a click and dead-letters a click
    whose key is not its user id, with nothing but its ACLs."""
    service = events_process(sasl_env(secured, EVENTS), redis_url, key_prefix, tmp_path)
    service.start()
    try:
        wait_serving(service, timeout_s=60)
        good, bad = click("acl-user-1", "acl-ev-1"), click("acl-user-2", "acl-ev-2")
        producer = make_producer(secured.bootstrap, security=secured.security(FRONTEND))
        try:
            for key, event in ((b"acl-user-1", good), (b"someone-else", bad)):
                value, headers = encode(event)
                producer.send(TOPIC_CLICKS, key=key, value=value, headers=list(headers))
            producer.flush(timeout=20)
        finally:
            producer.close(timeout=5)
        recent = KeySchema(key_prefix).recent("acl-user-1")
        wait_for(
            lambda: bool(redis_client.exists(recent)),
            30,
            "the good click in Redis",
            service.log_text,
        )
        reasons = dead_letter_reasons(secured)
        assert any(reason.startswith("key_mismatch") for reason in reasons), reasons
    finally:
        service.stop()
    assert "TopicAuthorizationFailed" not in service.log_text()


def dead_letter_reasons(broker: ApacheKafka, timeout_s: float = 30.0) -> list[str]:
    """The reasons on the clicks dead-letter topic, read by the admin (operators)."""
    from kafka import TopicPartition

    consumer = make_consumer(broker.bootstrap, None, security=broker.security())
    reasons: list[str] = []
    try:
        consumer.assign([TopicPartition(TOPIC_CLICKS_DLQ, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not reasons and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    headers = dict(record.headers or ())
                    reasons.append(headers.get(REASON_HEADER, b"").decode())
    finally:
        consumer.close()
    return reasons


def test_events_user_can_neither_read_feedback_nor_write_scored(secured: ApacheKafka) -> None:
    """The events user sees only its own topics: the feedback topics are authorization errors."""
    from kafka.errors import TopicAuthorizationFailedError

    events = secured.security(EVENTS)
    with pytest.raises(ConfigError, match=rf"not authorized for topic\(s\) {TOPIC_FEEDBACK}\b"):
        check_topic_access(secured.bootstrap, [TOPIC_CLICKS, TOPIC_FEEDBACK], events)
    producer = make_producer(secured.bootstrap, security=events, max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(TOPIC_FEEDBACK_SCORED, key=b"u", value=b"x").get(timeout=15)
    finally:
        producer.close(timeout=5)
    check_topic_access(secured.bootstrap, [TOPIC_CLICKS, TOPIC_CLICKS_DLQ], events)


def test_sentiment_user_cannot_read_clicks(
    secured: ApacheKafka, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The events service started with the sentiment user's credentials fails at start,
    naming the clicks topic, instead of waiting for a topic it will never see."""
    with pytest.raises(ConfigError, match=TOPIC_CLICKS):
        check_topic_access(secured.bootstrap, [TOPIC_CLICKS], secured.security(SENTIMENT))
    service = events_process(sasl_env(secured, SENTIMENT), redis_url, key_prefix, tmp_path)
    service.start()
    try:
        assert exit_code(service, 45) == 2
    finally:
        service.stop()
    log = service.log_text()
    assert "not authorized" in log and TOPIC_CLICKS in log, log[-2000:]


def test_wrong_password_fails_fast_with_an_authentication_error(
    secured: ApacheKafka, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A wrong password is a one-line ConfigError naming the user, and the service's start
    fails with it within seconds instead of retrying the login forever."""
    wrong = secured.security(EVENTS, password="not-the-password")
    with pytest.raises(ConfigError, match=f"log.* SCRAM-SHA-512 user '{EVENTS}'") as raised:
        check_reachable(secured.bootstrap, security=wrong)
    assert "KAFKA_SASL_PASSWORD" in str(raised.value)
    env = sasl_env(secured, EVENTS, password="not-the-password")
    service = events_process(env, redis_url, key_prefix, tmp_path)
    started = time.monotonic()
    service.start()
    try:
        assert exit_code(service, 45) == 2
    finally:
        service.stop()
    assert time.monotonic() - started < 45
    log = service.log_text()
    failed = [line for line in log.splitlines() if "events service failed" in line]
    assert len(failed) == 1 and "KAFKA_SASL_PASSWORD" in failed[0], log[-2000:]
    assert f"SCRAM-SHA-512 user '{EVENTS}'" in failed[0]
    assert "not-the-password" not in log
