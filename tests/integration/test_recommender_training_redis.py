"""`recsys train --source redis`: the matrix read from real weights hashes, then a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys.store.keys import KeySchema
from recsys.store.redis_store import RedisFeatureStore
from recsys_tools.cli import main
from recsys_tools.harness import free_port
from services.recommender.model import Model
from services.recommender.training import read_redis_weights

pytestmark = pytest.mark.integration


def _seed(client: Any, schema: KeySchema, n_users: int = 120) -> dict[str, dict[str, float]]:
    expected: dict[str, dict[str, float]] = {}
    pipe = client.pipeline(transaction=False)
    for u in range(n_users):
        group = "ab"[u % 2]
        weights = {f"{group}{(u + j) % 8}": float(1 + j) for j in range(5)}
        expected[f"user-{u}"] = weights
        pipe.hset(schema.weights(f"user-{u}"), mapping=weights)
        pipe.sadd(schema.seen(f"user-{u}"), *weights)  # a different per-user key
    pipe.execute()
    return expected


def test_train_from_redis_weights(
    redis_client: Any, redis_url: str, key_prefix: str, tmp_path: Path, capsys: Any
) -> None:
    schema = KeySchema(key_prefix)
    expected = _seed(redis_client, schema)
    assert dict(read_redis_weights(redis_client, schema, batch=7)) == expected

    store = tmp_path / "models"
    rc = main(
        [
            "train", "--source", "redis", "--redis-url", redis_url, "--key-prefix", key_prefix,
            "--store", str(store), "--factors", "8", "--iterations", "10", "--no-progress",
            "--weighting", "log", "--alpha", "5", "--regularization", "0.1",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["users"] == 120 and summary["interactions"] == 600
    model = Model.load(store)
    assert model.version == summary["version"]
    assert model.user_history("user-3") == expected["user-3"]
    recs = model.recommend("user-3", k=2)
    assert recs.ids and all(i.startswith("b") for i in recs.ids)  # user-3 is in the "b" group


def _train(argv: list[str], store: Path) -> int:
    return main(["train", "--store", str(store), "--factors", "8", "--iterations", "5",
                 "--no-progress", "--regularization", "0.1", *argv])  # fmt: skip


def test_train_from_redis_leaves_forgotten_users_out_even_with_late_weights(
    redis_client: Any, redis_url: str, key_prefix: str, tmp_path: Path, capsys: Any
) -> None:
    """Regression: the next training after `forget-user` must not contain the user, also
    when events that were still in Kafka re-created the user's weights after the forget."""
    schema = KeySchema(key_prefix)
    expected = _seed(redis_client, schema)
    store = RedisFeatureStore(redis_client, schema)
    store.forget_user("user-3")
    redis_client.hset(schema.weights("user-3"), mapping=expected["user-3"])  # a late event
    models = tmp_path / "models"
    rc = _train(["--source", "redis", "--redis-url", redis_url, "--key-prefix", key_prefix],
                models)  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["users"] == 119 and summary["forgotten_users"] == 1
    model = Model.load(models)
    assert model.user_row("user-3") is None and model.user_row("user-4") is not None
    assert model.config["forgotten_users"] == 1


def test_train_from_a_file_leaves_forgotten_users_out_and_needs_redis_to_know_them(
    redis_client: Any, redis_url: str, key_prefix: str, tmp_path: Path, capsys: Any
) -> None:
    """Regression: a data set or a CSV never forgets, so training from one put forgotten
    users back into the model. The forgotten records in Redis are applied to any source;
    without Redis the training fails unless told to skip the check."""
    rows = ["user,item,weight"] + [f"v{u},{'ab'[u % 2]}{j},1" for u in range(20) for j in range(4)]
    csv_path = tmp_path / "inter.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    RedisFeatureStore(redis_client, KeySchema(key_prefix)).forget_user("v7")
    source = ["--source", "csv", "--csv", str(csv_path), "--key-prefix", key_prefix]
    assert _train([*source, "--redis-url", redis_url], tmp_path / "m1") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["users"] == 19
    assert Model.load(tmp_path / "m1").user_row("v7") is None

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    assert _train([*source, "--redis-url", nowhere], tmp_path / "m2") == 2
    assert "--no-forgotten-check" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()
    assert _train([*source, "--redis-url", nowhere, "--no-forgotten-check"], tmp_path / "m3") == 0
    unchecked = Model.load(tmp_path / "m3")
    assert unchecked.user_row("v7") is not None and unchecked.config["forgotten_users"] is None
