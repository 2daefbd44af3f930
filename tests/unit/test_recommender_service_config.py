"""Recommender settings from the environment, and the model store watcher (hot reload)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_recommender import tiny_model

from recsys.errors import ConfigError
from services.recommender import artifact
from services.recommender.config import load_settings
from services.recommender.model import Model
from services.recommender.reload import ModelHolder, ModelWatcher


def test_defaults() -> None:
    s = load_settings({})
    assert (s.grpc_port, s.metrics_port, s.key_prefix, s.grace_s) == (50051, 9100, "rs", 20.0)
    assert s.tls is None and s.workers >= 1 and s.history_mode == "max"
    assert s.model_dir == "models"


def test_connection_age_becomes_grpc_options_and_zero_turns_it_off() -> None:
    from services.recommender.server import connection_age_options

    s = load_settings({"MAX_CONNECTION_AGE_S": "60", "GRACE_S": "5"})
    assert dict(connection_age_options(s)) == {
        "grpc.max_connection_age_ms": 60_000,
        "grpc.max_connection_age_grace_ms": 5_000,
    }
    assert load_settings({}).max_connection_age_s == 300.0
    assert connection_age_options(load_settings({"MAX_CONNECTION_AGE_S": "0"})) == []


def test_model_dir_follows_the_training_default() -> None:
    assert load_settings({"MODEL_STORE": "/m"}).model_dir == "/m"
    assert load_settings({"MODEL_STORE": "/m", "RECSYS_MODEL_DIR": "/r"}).model_dir == "/r"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GRPC_PORT": "http"}, "GRPC_PORT"),
        ({"MAX_K": "0"}, "MAX_K"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"FOLDIN_HISTORY": "avg"}, "FOLDIN_HISTORY"),
        ({"GRACE_S": "-1"}, "GRACE_S"),
        ({"MAX_CONNECTION_AGE_S": "-5"}, "MAX_CONNECTION_AGE_S"),
        ({"TLS_CERT_FILE": "/nonexistent.pem"}, "TLS_CERT_FILE and TLS_KEY_FILE"),
        ({"TLS_CLIENT_CA_FILE": "/ca.pem"}, "TLS_CLIENT_CA_FILE needs"),
        ({"TLS_CERT_FILE": "/nonexistent.pem", "TLS_KEY_FILE": "/k.pem"}, "cannot be read"),
    ],
)
def test_bad_values_fail_at_start_naming_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env)


def test_tls_files_are_read_at_start(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    s = load_settings({"TLS_CERT_FILE": str(tmp_path / "c.pem"),
                       "TLS_KEY_FILE": str(tmp_path / "k.pem")})  # fmt: skip
    assert s.tls is not None and not s.tls.mutual
    assert s.tls.read() == (b"cert", b"key", None)


# ------------------------------------------------------------------------------ reload
def publish(store: Path, version: str) -> str:
    return tiny_model(version).save(store)


def test_watcher_swaps_in_a_newer_version_and_ignores_the_same_one(tmp_path: Path) -> None:
    v1 = publish(tmp_path, "20250101T000000Z-00000001")
    holder = ModelHolder(Model.load(tmp_path))
    watcher = ModelWatcher(tmp_path, holder, interval_s=0)
    assert not watcher.check_once()
    old = holder.get()
    v2 = publish(tmp_path, "20250102T000000Z-00000002")
    assert watcher.check_once()
    assert (old.version, holder.version) == (v1, v2)
    assert old.recommend("ua", None, 1).ids  # the old model still works for in-flight requests


def test_a_broken_version_is_skipped_and_remembered(tmp_path: Path) -> None:
    publish(tmp_path, "20250101T000000Z-00000001")
    holder = ModelHolder(Model.load(tmp_path))
    errors: list[str] = []
    watcher = ModelWatcher(tmp_path, holder, interval_s=0,
                           on_error=lambda v, exc: errors.append(v))  # fmt: skip
    v2 = publish(tmp_path, "20250102T000000Z-00000002")
    (tmp_path / v2 / "item_factors.npy").write_bytes(b"truncated")
    assert not watcher.check_once()
    assert not watcher.check_once()  # not retried in a loop
    assert holder.version == "20250101T000000Z-00000001"
    assert errors == [v2]


def test_on_swap_reports_old_and_new(tmp_path: Path) -> None:
    seen: list[tuple[str | None, str]] = []
    holder = ModelHolder(tiny_model(), lambda old, new: seen.append(
        (old.version if old else None, new.version)))  # fmt: skip
    holder.swap(tiny_model("20250102T000000Z-00000002"))
    assert seen == [
        (None, "20250101T000000Z-00000001"),
        ("20250101T000000Z-00000001", "20250102T000000Z-00000002"),
    ]
    assert artifact.list_versions(tmp_path) == []
