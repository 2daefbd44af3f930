"""The recommender unit tests' hand-built model: two clusters and one cold item.

A items lie along x, B items along y, so which cluster a user gets is decided by their
history alone; ``c0`` is cold (a genre vector only), to check the content reason. Test
modules share it through this module, never through each other.
"""

from __future__ import annotations

import numpy as np

from services.recommender.model import ItemMeta, Model
from services.recommender.weights import Weighting, WeightingConfig

A = ["a0", "a1", "a2", "a3"]
B = ["b0", "b1", "b2", "b3"]
COLD = "c0"


def tiny_model(version: str = "20250101T000000Z-00000001") -> Model:
    items = [*A, *B, COLD]
    factors = np.array(
        [[1.0, 0.0], [0.9, 0.0], [0.8, 0.0], [0.7, 0.0],
         [0.0, 1.0], [0.0, 0.9], [0.0, 0.8], [0.0, 0.7],
         [0.5, 0.5]],
        dtype=np.float32,
    )  # fmt: skip
    users = ["ua", "ub"]
    user_factors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    popularity = np.array([1, 2, 3, 10, 1, 2, 3, 9, 0], dtype=np.float32)
    cold = np.array([False] * 8 + [True])
    # training history: ua touched a0, ub touched b0 (CSR over items)
    history = (
        np.array([0, 1, 2], dtype=np.int64),
        np.array([0, 4], dtype=np.int32),
        np.array([1.0, 1.0], dtype=np.float32),
    )
    meta = {i: ItemMeta(i, genres=("Action",)) for i in A}
    meta.update({i: ItemMeta(i, genres=("Comedy",)) for i in B})
    meta[COLD] = ItemMeta(COLD, genres=("Action", "Comedy"))
    return Model(
        version=version,
        item_ids=items,
        user_ids=users,
        item_factors=factors,
        user_factors=user_factors,
        regularization=0.1,
        weighting=Weighting(WeightingConfig(scheme="none"), np.ones(9, np.float32), 9),
        item_popularity=popularity,
        cold_items=cold,
        history=history,
        items=meta,
    )
