"""The generated Redis ACL rules (``recsys.store.acl``) and REDIS_URL redaction, no server.

tests/integration/test_redis_acl.py loads the same rules into a real redis-server.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest

from recsys.errors import ConfigError
from recsys.settings import redacted_url, validate_redis_url
from recsys.store.acl import (
    FORBIDDEN,
    SERVICES,
    acl_rules,
    password_hash_rule,
    password_placeholder,
    script_commands,
    service_grant,
)
from recsys.store.keys import KeySchema
from recsys.store.redis_store import SCRIPTS
from recsys_tools.cli import main
from recsys_tools.commands.redis_acl import acl_file


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_command_a_script_runs_is_found_for_the_acl(name: str) -> None:
    """A call whose command is not a literal would be missing from the grants."""
    source = resources.files("recsys.store.lua").joinpath(f"{name}.lua").read_text("utf-8")
    calls = len(re.findall(r"redis\.p?call\(", source))
    found = len(re.findall(r"redis\.p?call\(\s*'[A-Za-z]+'", source))
    assert calls == found > 0
    assert script_commands(name)


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_is_granted_a_dangerous_command_a_category_or_channels(service: str) -> None:
    rules = acl_rules(service, KeySchema("rs"), password_rule=">pw").split()
    assert rules[:5] == ["reset", "on", ">pw", "resetchannels", "-@all"]
    granted = {rule[1:] for rule in rules if rule.startswith("+")}
    assert not granted & FORBIDDEN
    assert not any(rule.startswith(("+@", "&", "allkeys", "allchannels")) for rule in rules)
    assert "nopass" not in rules and "~*" not in rules


@pytest.mark.parametrize("service", SERVICES)
def test_key_patterns_follow_the_prefix_with_its_glob_characters_escaped(service: str) -> None:
    grant = service_grant(service, KeySchema("a*b"))
    patterns = grant.read_write + grant.read_only
    assert patterns and all(p.startswith("a\\*b:{") for p in patterns)
    assert service_grant(service, KeySchema("rs")).commands == grant.commands


def test_the_recommender_and_the_trainer_only_read() -> None:
    for service in ("recommender", "trainer"):
        grant = service_grant(service, KeySchema())
        assert grant.read_write == () and grant.read_only
        assert "evalsha" not in grant.commands
    assert "evalsha" not in service_grant("admin", KeySchema()).commands


def test_each_writer_writes_only_its_own_kinds() -> None:
    keys = KeySchema("rs")
    assert set(service_grant("sentiment", keys).read_write) == {
        keys.per_user_pattern(keys.sentiment),
        keys.per_user_pattern(keys.feedback_applied),
        keys.per_user_pattern(keys.suppressed),
    }
    events = set(service_grant("events", keys).read_write)
    assert keys.per_user_pattern(keys.sentiment) not in events
    assert keys.per_user_pattern(keys.forgotten) not in events


def test_the_cluster_variant_adds_only_the_topology_reads() -> None:
    plain = set(service_grant("events", KeySchema()).commands)
    cluster = set(service_grant("events", KeySchema(), cluster=True).commands)
    assert cluster - plain == {"cluster|slots", "command"}


def test_passwords_appear_only_as_their_hash_or_a_placeholder_redis_refuses() -> None:
    rule = password_hash_rule("s3cret")
    assert rule == "#" + hashlib.sha256(b"s3cret").hexdigest()
    text, missing = acl_file("rs", {"REDIS_ACL_PASSWORD_EVENTS": "s3cret"})
    assert "s3cret" not in text and rule in text
    assert missing == ["recommender", "sentiment", "trainer", "admin"]
    assert password_placeholder("admin") in text
    assert not re.fullmatch(r"#[0-9a-f]{64}", password_placeholder("admin"))
    with pytest.raises(ValueError):
        acl_rules("events", KeySchema(), password_rule=">with space")
    with pytest.raises(ValueError):
        acl_rules("nobody", KeySchema())


def test_the_acl_file_turns_the_default_user_off_unless_asked() -> None:
    text, _ = acl_file("rs", {})
    lines = text.splitlines()
    assert lines[0] == "user default off"
    assert [line.split()[1] for line in lines[1:]] == [f"recsys-{s}" for s in SERVICES]
    kept, _ = acl_file("rs", {}, keep_default=True, user_prefix="shop")
    assert kept.splitlines()[0].startswith("user shop-events ")


def test_recsys_redis_acl_prints_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redis-acl", "--prefix", "shop"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("user default off\n") and "~shop:{u:*}:recent" in out


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://recsys-events:s3:cret@h:6379/0", "redis://recsys-events:***@h:6379/0"),
        ("redis://:s3cret@h/0", "redis://:***@h/0"),
        ("rediss://u@h/0?password=s3cret&db=1", "rediss://u@h/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
    ],
)
def test_redacted_url_hides_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_a_rejected_redis_url_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_redis_url("redis://u:s3cret@h:notaport/0")
    assert "s3cret" not in str(caught.value)
