"""Configuration fails fast with a one-line message that names what to set."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import ConfigError
from recsys.kafka_io import check_reachable
from recsys.settings import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    parse_bootstrap,
    parse_sentinel_url,
    redacted_url,
    redis_wait_from_env,
    validate_redis_url,
)
from recsys.store.keys import DEFAULT_PREFIX
from recsys.weights import EventWeights, parse_event_weights


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


def test_sentinel_url_names_the_sentinels_the_service_and_the_data_user() -> None:
    url = "redis+sentinel://recsys-events:s%40cret@10.0.0.1:26379,10.0.0.2:26380/main/2"
    assert validate_redis_url(url) == url
    parsed = parse_sentinel_url(url)
    assert parsed.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (parsed.service, parsed.db) == ("main", 2)
    assert (parsed.username, parsed.password) == ("recsys-events", "s@cret")
    assert "s%40cret" not in redacted_url(url)
    assert parse_sentinel_url("redis+sentinel://h:1/svc").db == 0


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:1",  # no service
        "redis+sentinel:///svc",  # no Sentinel
        "redis+sentinel://h/svc",  # no port
        "redis+sentinel://h:1,h:x/svc",
        "redis+sentinel://h:1/svc/db",
    ],
)
def test_bad_sentinel_url_is_rejected(url: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        validate_redis_url(url)


def test_redis_wait_defaults_off_and_refuses_a_cluster() -> None:
    assert redis_wait_from_env({}, cluster=False) == (0, 1000)
    assert redis_wait_from_env(
        {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "250"}, cluster=False
    ) == (1, 250)
    assert redis_wait_from_env({}, cluster=True) == (0, 1000)
    with pytest.raises(ConfigError, match=r"REDIS_WAIT_REPLICAS.*REDIS_CLUSTER"):
        redis_wait_from_env({"REDIS_WAIT_REPLICAS": "1"}, cluster=True)
    with pytest.raises(ConfigError, match="REDIS_WAIT_REPLICAS"):
        redis_wait_from_env({"REDIS_WAIT_REPLICAS": "-1"}, cluster=False)


def test_unreachable_broker_fails_fast_with_what_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        check_reachable("127.0.0.1:1", timeout_s=0.5)
    message = str(info.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in message
    assert "\n" not in message


# ------------------------------------------------------------ shared by every service
def test_event_weights_need_every_type_and_default_to_the_documented_mapping() -> None:
    assert parse_event_weights("view=0.5,click=1,add_to_cart=3,purchase=5")["add_to_cart"] == 3.0
    for bad in ("view=1,click=2", "view=x,click=2,add_to_cart=3,purchase=4", "rating=1"):
        with pytest.raises(ConfigError, match="EVENT_WEIGHTS"):
            parse_event_weights(bad)
    default = EventWeights.from_env({})
    assert dict(default.weights) == {"view": 1.0, "click": 2.0, "add_to_cart": 4.0,
                                     "purchase": 8.0}  # fmt: skip
    assert default == EventWeights()
    assert default.weight("rating", 4.0) == 4.0  # the stars


def test_one_weights_setting_weighs_events_for_the_events_service_and_training() -> None:
    """EVENT_WEIGHTS and RATING_WEIGHT_*: what the events service folds into Redis is what
    training from a data set uses (both read recsys.weights.EventWeights)."""
    from services.events.config import load_settings as events_settings

    env = {"EVENT_WEIGHTS": "view=0.5,click=1,add_to_cart=3,purchase=9",
           "RATING_WEIGHT_SCALE": "2", "RATING_WEIGHT_OFFSET": "3"}  # fmt: skip
    shared = EventWeights.from_env(env)
    validation = events_settings(env).validation
    assert isinstance(validation, EventWeights)
    for kind in ("view", "click", "add_to_cart", "purchase"):
        assert validation.weights[kind] == shared.weight(kind)
    assert validation.rating_weight(5.0) == shared.weight("rating", 5.0) == 4.0
    assert shared.rating_weights(np.array([5.0, 1.0])).tolist() == [4.0, -4.0]


def test_every_service_reads_the_same_redis_settings() -> None:
    """REDIS_KEY_PREFIX (default: the schema's) and REDIS_CLUSTER, for all three services."""
    from services.events.config import load_settings as events_settings
    from services.recommender.config import load_settings as recommender_settings
    from services.sentiment.config import load_settings as sentiment_settings

    for load in (events_settings, recommender_settings, sentiment_settings):
        default = load({})
        assert (default.key_prefix, default.redis_cluster) == (DEFAULT_PREFIX, False)
        cluster = load({"REDIS_CLUSTER": "true", "REDIS_KEY_PREFIX": "p1"})
        assert (cluster.key_prefix, cluster.redis_cluster) == ("p1", True)
        with pytest.raises(ConfigError, match="REDIS_CLUSTER"):
            load({"REDIS_CLUSTER": "maybe"})


# --- Kafka security (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*) ------------------------------
def test_kafka_security_default_is_plaintext_and_adds_no_client_arguments() -> None:
    """No variables: the clients are configured exactly as before security settings existed."""
    from recsys.kafka_io import security_config
    from recsys.settings import (
        ConsumerSettings,
        KafkaSecurity,
        load_consumer_settings,
        load_kafka_security,
    )

    assert load_kafka_security({}) == KafkaSecurity()
    assert security_config(load_kafka_security({})) == {}
    assert (
        load_consumer_settings(
            {}, "X", ConsumerSettings(topic="t", dlq_topic="d", group_id="g")
        ).security
        == KafkaSecurity()
    )


def test_kafka_security_sasl_becomes_kafka_python_arguments_and_hides_the_password() -> None:
    from recsys.kafka_io import security_config
    from recsys.settings import load_kafka_security

    env = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "KAFKA_SASL_USERNAME": "recsys-events",
        "KAFKA_SASL_PASSWORD": "s3cret",
    }
    security = load_kafka_security(env)
    assert security_config(security) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "recsys-events",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(security)
    tls = load_kafka_security(
        {**env, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CAFILE": "/etc/ca.pem"}
    )
    assert security_config(tls)["ssl_cafile"] == "/etc/ca.pem"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
                "KAFKA_SASL_MECHANISM": "PLAIN",
            },
            "KAFKA_SASL_MECHANISM",
        ),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME"),
    ],
)
def test_kafka_security_invalid_settings_fail_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    from recsys.settings import load_kafka_security

    with pytest.raises(ConfigError, match=variable):
        load_kafka_security(env)
