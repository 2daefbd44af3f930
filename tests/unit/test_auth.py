"""The credentials policy (recsys.auth) and ``recsys auth add-client``, without a server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recsys.auth import (
    REASON_FORBIDDEN,
    REASON_MALFORMED,
    REASON_MISSING,
    REASON_UNKNOWN,
    ROLES,
    Client,
    Policy,
    hash_token,
    load_auth_settings,
    load_policy,
    parse_credentials,
)
from recsys.errors import ConfigError
from recsys_tools.commands.auth import add_client

REC = "recsys.recommender.v1.RecommenderService"
SENT = "recsys.sentiment.v1.SentimentService"


def _entry(name: str, token: str, allow: list[str]) -> dict[str, object]:
    return {"name": name, "token_sha256": hash_token(token), "allow": allow}


@pytest.fixture
def policy() -> Policy:
    doc = {
        "clients": [
            _entry("web", "web-token", list(ROLES["frontend"])),
            _entry("ops", "ops-token", [f"{REC}/*"]),
            {"name": "cert-client", "tls_name": "crm.example", "allow": [f"{SENT}/Classify"]},
        ]
    }
    return Policy(parse_credentials(json.dumps(doc), "test"))


def test_known_token_may_call_its_methods(policy: Policy) -> None:
    assert policy.decide(f"{REC}/Recommend", "Bearer web-token") is None
    assert policy.decide(f"{REC}/BatchRecommend", "bearer  web-token ") is None


def test_wildcard_allows_every_method_of_that_service_only(policy: Policy) -> None:
    assert policy.decide(f"{REC}/Explain", "Bearer ops-token") is None
    denial = policy.decide(f"{SENT}/Classify", "Bearer ops-token")
    assert denial is not None and denial.status == "PERMISSION_DENIED"


def test_frontend_may_not_explain_and_is_told_who_and_what(policy: Policy) -> None:
    denial = policy.decide(f"{REC}/Explain", "Bearer web-token")
    assert denial is not None
    assert (denial.status, denial.reason) == ("PERMISSION_DENIED", REASON_FORBIDDEN)
    assert "'web'" in denial.message and f"{REC}/Explain" in denial.message


def test_no_credentials_is_unauthenticated_with_a_hint(policy: Policy) -> None:
    denial = policy.decide(f"{REC}/Recommend", None)
    assert denial is not None
    assert (denial.status, denial.reason) == ("UNAUTHENTICATED", REASON_MISSING)
    assert "authorization: Bearer" in denial.message


@pytest.mark.parametrize("value", ["web-token", "Basic d2ViOg==", "Bearer", "Bearer   "])
def test_authorization_that_is_not_a_bearer_token_is_malformed(policy: Policy, value: str) -> None:
    denial = policy.decide(f"{REC}/Recommend", value)
    assert denial is not None
    assert (denial.status, denial.reason) == ("UNAUTHENTICATED", REASON_MALFORMED)


def test_unknown_token_is_unauthenticated_and_never_echoed(policy: Policy) -> None:
    denial = policy.decide(f"{REC}/Recommend", "Bearer web-tokeN")
    assert denial is not None
    assert (denial.status, denial.reason) == ("UNAUTHENTICATED", REASON_UNKNOWN)
    assert "web-tokeN" not in denial.message


def test_tls_name_identifies_a_client_without_a_token(policy: Policy) -> None:
    assert policy.decide(f"{SENT}/Classify", None, ["crm.example"]) is None
    denial = policy.decide(f"{SENT}/ClassifyBatch", None, ["crm.example"])
    assert denial is not None and denial.reason == REASON_FORBIDDEN
    unknown = policy.decide(f"{SENT}/Classify", None, ["other.example"])
    assert unknown is not None and unknown.reason == REASON_UNKNOWN


def test_a_wrong_token_is_refused_even_with_a_known_certificate(policy: Policy) -> None:
    denial = policy.decide(f"{SENT}/Classify", "Bearer nope", ["crm.example"])
    assert denial is not None and denial.reason == REASON_UNKNOWN


def test_client_repr_does_not_show_the_digest() -> None:
    client = Client("web", frozenset(), bytes(32))
    assert "token_sha256" not in repr(client)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("not json", "not JSON"),
        ('{"clients": {}}', '{"clients": [...]}'),
        ('{"clients": [{"name": "a", "allow": []}]}', "needs 'token_sha256' or 'tls_name'"),
        (
            '{"clients": [{"name": "a", "token_sha256": "plain-token", "allow": []}]}',
            "64 hex digits",
        ),
        (
            json.dumps({"clients": [_entry("a", "t", [f"{REC}/Recomend"])]}),
            "is not a method",
        ),
        (json.dumps({"clients": [_entry("a", "t", ["recsys.Nope/*"])]}), "is not a method"),
        (
            json.dumps({"clients": [{**_entry("a", "t", []), "token": "t"}]}),
            "unknown field(s) token",
        ),
    ],
)
def test_invalid_credentials_fail_with_a_message_naming_the_source(doc: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"creds\.json") as info:
        parse_credentials(doc, "creds.json")
    assert fragment in str(info.value)


def test_a_directory_of_files_is_one_policy_and_duplicates_fail(tmp_path: Path) -> None:
    (tmp_path / "web.json").write_text(json.dumps({"clients": [_entry("web", "w", [])]}))
    (tmp_path / "ops.json").write_text(json.dumps({"clients": [_entry("ops", "o", [])]}))
    (tmp_path / "..data").mkdir()  # what a projected Secret volume also holds
    (tmp_path / "README").write_text("not a credentials file")
    assert sorted(c.name for c in load_policy(str(tmp_path)).clients) == ["ops", "web"]

    (tmp_path / "again.json").write_text(json.dumps({"clients": [_entry("web2", "w", [])]}))
    with pytest.raises(ConfigError, match="the same token twice"):
        load_policy(str(tmp_path))


def test_auth_is_required_by_default_and_needs_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^AUTH_CREDENTIALS_FILE is not set"):
        load_auth_settings({})
    with pytest.raises(ConfigError, match=r"^AUTH_CREDENTIALS_FILE='/nonexistent' does not"):
        load_auth_settings({"AUTH_CREDENTIALS_FILE": "/nonexistent"})
    with pytest.raises(ConfigError, match=r"^AUTH_MODE='maybe' must be one of"):
        load_auth_settings({"AUTH_MODE": "maybe"})
    off = load_auth_settings({"AUTH_MODE": "OFF"})
    assert not off.enabled and off.policy is None

    file = tmp_path / "c.json"
    file.write_text(json.dumps({"clients": [_entry("web", "w", [])]}))
    on = load_auth_settings({"AUTH_CREDENTIALS_FILE": str(file)})
    assert on.enabled and on.policy is not None


def test_add_client_stores_only_the_hash_and_the_token_then_works(tmp_path: Path) -> None:
    file = tmp_path / "creds.json"
    written, token = add_client(file, "web", list(ROLES["frontend"]))
    assert written == file and token.startswith("rsk_")
    text = file.read_text()
    assert token not in text and hash_token(token) in text
    assert os.stat(file).st_mode & 0o077 == 0
    policy = load_policy(str(file))
    assert policy.decide(f"{REC}/Recommend", f"Bearer {token}") is None

    with pytest.raises(ConfigError, match="--replace"):
        add_client(file, "web", list(ROLES["frontend"]))
    _, new = add_client(file, "web", list(ROLES["frontend"]), replace=True)
    policy = load_policy(str(file))
    assert policy.decide(f"{REC}/Recommend", f"Bearer {token}") is not None
    assert policy.decide(f"{REC}/Recommend", f"Bearer {new}") is None


def test_add_client_into_a_directory_writes_one_file_per_client(tmp_path: Path) -> None:
    add_client(tmp_path, "web", list(ROLES["frontend"]))
    file, token = add_client(tmp_path, "crm", list(ROLES["crm"]))
    assert file == tmp_path / "crm.json"
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["crm.json", "web.json"]
    assert load_policy(str(tmp_path)).decide(f"{SENT}/Classify", f"Bearer {token}") is None


def test_add_client_with_a_tls_name_issues_no_token(tmp_path: Path) -> None:
    file, token = add_client(tmp_path / "c.json", "crm", list(ROLES["crm"]), tls_name="crm.x")
    assert token == ""
    assert "token_sha256" not in file.read_text()
    assert load_policy(str(file)).decide(f"{SENT}/Classify", None, ["crm.x"]) is None
