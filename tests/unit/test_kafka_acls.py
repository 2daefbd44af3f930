"""The per-service Kafka ACLs and the secured broker's configuration, without a broker."""

from __future__ import annotations

from pathlib import Path

from recsys_tools.infra.apache_kafka import ScramConfig, server_properties
from recsys_tools.infra.kafka_acls import service_grants, to_kafka_python

NO_CREATE = {"EVENTS_CREATE_TOPICS": "false", "SENTIMENT_CREATE_TOPICS": "false"}


def test_each_user_gets_only_its_own_topics_and_group() -> None:
    grants = {(g.user, g.resource, g.name): g.operations for g in service_grants(NO_CREATE)}
    assert grants == {
        ("recsys-events", "topic", "recsys.clicks.v1"): ("READ", "DESCRIBE"),
        ("recsys-events", "group", "recsys-events"): ("READ",),
        ("recsys-events", "topic", "recsys.clicks.dlq.v1"): ("WRITE", "DESCRIBE"),
        ("recsys-sentiment", "topic", "recsys.feedback.v1"): ("READ", "DESCRIBE"),
        ("recsys-sentiment", "group", "recsys-sentiment"): ("READ",),
        ("recsys-sentiment", "topic", "recsys.feedback.scored.v1"): ("WRITE", "DESCRIBE"),
        ("recsys-sentiment", "topic", "recsys.feedback.dlq.v1"): ("WRITE", "DESCRIBE"),
        ("recsys-frontend", "topic", "recsys.clicks.v1"): ("WRITE", "DESCRIBE"),
        ("recsys-crm", "topic", "recsys.feedback.v1"): ("WRITE", "DESCRIBE"),
    }
    assert len(to_kafka_python(service_grants(NO_CREATE))) == 16


def test_create_is_granted_only_while_the_service_creates_its_topics() -> None:
    creates = [g for g in service_grants({}) if "CREATE" in g.operations]
    assert {(g.user, g.name) for g in creates} == {
        ("recsys-events", "recsys.clicks.v1"),
        ("recsys-events", "recsys.clicks.dlq.v1"),
        ("recsys-sentiment", "recsys.feedback.v1"),
        ("recsys-sentiment", "recsys.feedback.scored.v1"),
        ("recsys-sentiment", "recsys.feedback.dlq.v1"),
    }


def test_renamed_topics_and_groups_move_their_acls() -> None:
    env = {**NO_CREATE, "EVENTS_TOPIC": "clicks.eu", "EVENTS_GROUP_ID": "events-eu"}
    names = {g.name for g in service_grants(env) if g.user == "recsys-events"}
    assert names == {"clicks.eu", "events-eu", "recsys.clicks.dlq.v1"}


def test_default_broker_config_has_no_security_and_secured_mode_enforces_acls() -> None:
    """The unsecured file the other suites use is untouched by the secured mode's options."""
    plain = server_properties(port=9092, controller_port=9093, log_dir=Path("/d"))
    assert "sasl" not in plain and "authorizer" not in plain
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in plain
    scram = ScramConfig(users={"u": "p"}, admin_password="adminpw")
    secured = server_properties(port=9092, controller_port=9093, log_dir=Path("/d"), scram=scram)
    lines = dict(line.split("=", 1) for line in secured.splitlines())
    assert lines["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert lines["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert lines["authorizer.class.name"].endswith("StandardAuthorizer")
    assert lines["allow.everyone.if.no.acl.found"] == "false"
    assert lines["super.users"].startswith("User:admin")
    assert "adminpw" not in repr(scram)
