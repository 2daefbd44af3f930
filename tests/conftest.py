"""Shared fixtures: real Kafka and Redis on loopback (see docs/infrastructure.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["recsys_tools.infra.pytest_plugin"]


@pytest.fixture(scope="module")
def recommender_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with a tiny published ALS model (20 users, 10 items in two groups):
    enough for a recommender process to load and serve, trained in well under a second."""
    from services.recommender.training import TrainConfig, build_matrix, train

    store = tmp_path_factory.mktemp("models")
    users = [f"u{u}" for u in range(20) for _ in range(5)]
    items = [f"i{(u % 2) * 5 + i}" for u in range(20) for i in range(5)]
    config = TrainConfig(factors=4, iterations=5, num_threads=1)
    train(build_matrix(users, items, [1.0] * len(users)), config).save(store)
    return store
