"""`recsys train --source redis`: the matrix read from real weights hashes, then a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys.store.keys import KeySchema
from recsys_tools.cli import main
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
