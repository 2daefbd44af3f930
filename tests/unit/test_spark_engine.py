"""The Spark engine's pure parts (no Spark session): the hyperparameter mapping, the factor
tables back to dense arrays, and the engine recorded in the model. The Spark fit itself runs
in tests/integration/test_spark_training.py (a local session takes seconds to start)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError
from services.recommender.spark_als import SparkSettings, _dense, mapped_reg_param
from services.recommender.training import TrainConfig, build_matrix, train


def test_reg_param_regularises_the_average_user_like_implicit() -> None:
    """Spark multiplies regParam by a row's interactions; the mapping divides implicit's λ by
    the mean per user, so λ_spark × (mean interactions) = λ_implicit."""
    m = sp.csr_matrix(np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    reg = mapped_reg_param(m, 6.0)
    assert reg == pytest.approx(6.0 / 3.0)  # 6 interactions over the 2 users who have any
    assert reg * (m.nnz / 2) == pytest.approx(6.0)


def test_dense_places_rows_by_id_and_leaves_unseen_rows_at_zero() -> None:
    table = pa.table({"id": [2, 0], "features": [[1.0, 2.0], [3.0, 4.0]]})
    out = _dense(table, rows=4, rank=2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[3, 4], [0, 0], [1, 2], [0, 0]])
    assert not _dense(table.slice(0, 0), rows=3, rank=2).any()


def test_settings_reject_a_negative_reg_param() -> None:
    with pytest.raises(ConfigError):
        SparkSettings(reg_param=-1.0)


class _Recorded:
    """A stand-in engine: the pure training path must take any engine's factors as they are."""

    name = "recorded"

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.seen: sp.csr_matrix | None = None

    def fit(
        self, confidence: sp.csr_matrix, config: TrainConfig, show_progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        self.seen = confidence
        self.params = {"rows": confidence.shape[0]}
        users, items = confidence.shape
        return (
            np.ones((users, config.factors), dtype=np.float32),
            np.arange(items * config.factors, dtype=np.float32).reshape(items, -1),
        )


def test_train_uses_the_given_engine_and_names_it_in_the_model() -> None:
    data = build_matrix(["a", "a", "b"], ["x", "y", "y"], [1.0, 2.0, 4.0], item_ids=["x", "y", "z"])
    engine = _Recorded()
    model = train(data, TrainConfig(factors=2, cold_items="zero"), engine=engine)
    assert engine.seen is not None and engine.seen.nnz == 3
    assert model.config["engine"] == "recorded"
    assert model.config["engine_params"] == {"rows": 2}
    np.testing.assert_array_equal(model.item_factors[0], [0, 1])
    assert not model.item_factors[2].any()  # "z" has no interactions: the cold-item step


def test_default_engine_is_implicit() -> None:
    data = build_matrix(["a", "b"], ["x", "y"], [1.0, 1.0])
    model = train(data, TrainConfig(factors=2, iterations=1, num_threads=1))
    assert model.config["engine"] == "implicit" and "engine_params" not in model.config
