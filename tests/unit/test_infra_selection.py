"""Pure logic of the infra launchers: selection, config rendering, state handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys_tools.infra.apache_kafka import kafka_version, parse_java_version, server_properties
from recsys_tools.infra.cli import load_state, save_state, state_dir, status_report
from recsys_tools.infra.endpoints import TANSU_CONSUMER_OVERRIDES, KafkaEndpoint, cache_dir
from recsys_tools.infra.launcher import Which, redis_mode, resolve_kafka_kind


def which_all(name: str) -> str | None:
    return f"/usr/bin/{name}"


def which_none(name: str) -> str | None:
    return None


def which_java_only(name: str) -> str | None:
    return "/usr/bin/java" if name == "java" else None


@pytest.mark.parametrize(
    ("env", "which", "expected"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, which_all, "external"),
        ({"RECSYS_INFRA": "docker"}, which_all, "docker"),
        ({}, which_all, "apache"),
        ({}, which_java_only, "tansu"),
        ({}, which_none, "tansu"),
        ({"RECSYS_KAFKA": "tansu", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, which_all, "tansu"),
        ({"RECSYS_KAFKA": "apache"}, which_none, "apache"),  # explicit: preflight reports
    ],
)
def test_auto_selection_order(env: dict[str, str], which: Which, expected: str) -> None:
    assert resolve_kafka_kind(env, which=which) == expected


def test_cached_jars_make_maven_optional() -> None:
    assert resolve_kafka_kind({}, which=which_java_only, jars_cached=True) == "apache"


def test_prefer_embedded_skips_apache_but_not_an_explicit_choice() -> None:
    assert resolve_kafka_kind({}, which=which_all, prefer_embedded=True) == "tansu"
    assert resolve_kafka_kind({}, "apache", which=which_all, prefer_embedded=True) == "apache"
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    assert resolve_kafka_kind(env, which=which_all, prefer_embedded=True) == "external"


def test_bad_selector_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="RECSYS_KAFKA"):
        resolve_kafka_kind({"RECSYS_KAFKA": "zookeeper"})
    with pytest.raises(ConfigError, match="RECSYS_INFRA"):
        resolve_kafka_kind({"RECSYS_INFRA": "podman"}, which=which_all)
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        resolve_kafka_kind({"RECSYS_KAFKA": "external"})


def test_redis_mode() -> None:
    assert redis_mode({"REDIS_URL": "redis://h:1/0"}) == "external"
    assert redis_mode({"RECSYS_INFRA": "docker"}) == "docker"
    assert redis_mode({}) == "local"


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_parse_java_version(text: str, major: int | None) -> None:
    assert parse_java_version(text) == major


def test_kafka_version_must_be_4x() -> None:
    assert kafka_version({}) == "4.1.1"
    assert kafka_version({"RECSYS_KAFKA_VERSION": "4.0.0"}) == "4.0.0"
    with pytest.raises(ConfigError, match="KRaft"):
        kafka_version({"RECSYS_KAFKA_VERSION": "3.7.0"})
    with pytest.raises(ConfigError, match=r"x\.y\.z"):
        kafka_version({"RECSYS_KAFKA_VERSION": "latest"})


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    text = server_properties(port=1111, controller_port=2222, log_dir=tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2222"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1111"
    assert props["log.dirs"] == str(tmp_path)
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_endpoint_consumer_config_lets_the_caller_win() -> None:
    endpoint = KafkaEndpoint("h:1", "tansu", "t", dict(TANSU_CONSUMER_OVERRIDES))
    merged = endpoint.consumer_config(max_poll_interval_ms=9000, client_id="x")
    assert merged["max_poll_interval_ms"] == 9000
    assert merged["session_timeout_ms"] == TANSU_CONSUMER_OVERRIDES["session_timeout_ms"]
    assert merged["client_id"] == "x"


def test_state_and_cache_dirs_follow_env(tmp_path: Path) -> None:
    assert cache_dir({"RECSYS_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert state_dir({"RECSYS_CACHE_DIR": str(tmp_path)}) == tmp_path / "state"
    assert state_dir({"RECSYS_STATE_DIR": str(tmp_path / "s")}) == tmp_path / "s"
    assert cache_dir({}) == Path.home() / ".cache" / "recsys"


def test_state_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    save_state(tmp_path, {"redis": {"url": "redis://h:1/0"}})
    assert load_state(tmp_path) == {"redis": {"url": "redis://h:1/0"}}
    (tmp_path / "infra.json").write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        load_state(tmp_path)


def test_status_reports_dead_and_recycled_pids() -> None:
    me = os.getpid()
    state = {
        # Our own pid exists but the marker does not match: a recycled pid is "dead".
        "kafka": {"kind": "tansu", "pid": me, "marker": "no-such-marker-xyz", "port": 1},
        "redis": {"url": "redis://h:1/0", "description": "external"},
    }
    report = status_report(state)
    assert report["kafka"]["state"] == "dead" and report["kafka"]["alive"] is False
    assert report["redis"]["state"] == "external"
    assert status_report({}) == {"kafka": {"state": "down"}, "redis": {"state": "down"}}
