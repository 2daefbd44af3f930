"""Configuration fails fast with a one-line message that names what to set."""

from __future__ import annotations

import pytest

from recsys.errors import ConfigError
from recsys.kafka_io import check_reachable
from recsys.settings import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    parse_bootstrap,
    validate_redis_url,
)


def test_env_int_defaults_and_bounds() -> None:
    assert env_int({}, "K", 5) == 5
    assert env_int({"K": " 7 "}, "K", 5, minimum=1) == 7
    with pytest.raises(ConfigError, match="K='x' is not an integer"):
        env_int({"K": "x"}, "K", 5)
    with pytest.raises(ConfigError, match="K=0 must be >= 1"):
        env_int({"K": "0"}, "K", 5, minimum=1)


def test_env_float_bool_choice() -> None:
    assert env_float({"F": "0.5"}, "F", 1.0, maximum=1.0) == 0.5
    assert env_bool({"B": "yes"}, "B", False) is True
    assert env_bool({}, "B", True) is True
    with pytest.raises(ConfigError, match="not a boolean"):
        env_bool({"B": "maybe"}, "B", False)
    assert env_choice({"C": "TANSU"}, "C", "auto", ("auto", "tansu")) == "tansu"
    with pytest.raises(ConfigError, match="must be one of auto, tansu"):
        env_choice({"C": "zk"}, "C", "auto", ("auto", "tansu"))


@pytest.mark.parametrize("value", ["", "localhost", "host:port", "h:70000", ":9092"])
def test_bad_bootstrap_is_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        parse_bootstrap(value)


def test_bootstrap_list_is_split() -> None:
    assert parse_bootstrap("a:1, b:2") == ["a:1", "b:2"]


@pytest.mark.parametrize("url", ["http://x", "localhost:6379", "redis://", "redis://h:notaport"])
def test_bad_redis_url_is_rejected(url: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        validate_redis_url(url)


def test_unreachable_broker_fails_fast_with_what_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        check_reachable("127.0.0.1:1", timeout_s=0.5)
    message = str(info.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in message
    assert "\n" not in message
