"""The served item-item families: the model ``recsys train --config`` publishes scores what
``recsys evaluate --config`` scored, survives the artifact round trip, and goes through the
recommender service's one request path (live fold-in, exclusions) like the ALS model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.store.memory import InMemoryFeatureStore
from recsys.store.model import FeatureEvent
from services.recommender import families, item_model
from services.recommender.model import Model
from services.recommender.reload import load_model
from services.recommender.service import Limits, RecommenderService, RecommendQuery, StateReader

# Two clusters of items (a*, b*); users u0-u5 stay in cluster a, u6-u11 in b.
ITEMS = [f"a{j}" for j in range(6)] + [f"b{j}" for j in range(6)]
USERS = [f"u{j}" for j in range(12)]
CONFIGS = [
    families.FamilyConfig("ease", {"lambda": 5.0, "input": "binary"}),
    families.FamilyConfig("rp3beta", {"alpha": 0.8, "beta": 0.3, "neighbours": 5}),
    families.FamilyConfig("item_knn", {"neighbours": 5}),
]


def _matrix() -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for u in range(12):
        base = 0 if u < 6 else 6
        for j in range(4):
            rows.append(u)
            cols.append(base + (u + j) % 6)
            vals.append(1.0 + j)
    return sp.csr_matrix((vals, (rows, cols)), shape=(12, 12), dtype=np.float32)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.family)
def test_served_item_item_model_scores_exactly_what_was_evaluated(
    config: families.FamilyConfig, tmp_path: Path
) -> None:
    m = _matrix()
    evaluated = families.build(config, m).scores(np.arange(12))
    model = item_model.train(m, USERS, ITEMS, config)
    version = model.save(tmp_path)
    loaded = load_model(tmp_path / version)
    assert isinstance(loaded, item_model.ItemItemModel)
    assert loaded.config["family"] == config.family
    assert loaded.config["params"] == config.params
    for u, user in enumerate(USERS):
        vector, source = loaded.user_vector(user)
        assert source == "model" and vector is not None
        np.testing.assert_allclose(loaded.item_scores(vector), evaluated[u], rtol=1e-5, atol=1e-6)
    recs = loaded.recommend("u0", k=2)  # a4, a5: the unseen items of its cluster
    assert all(i.startswith("a") for i in recs.ids)  # the user's own cluster
    assert not set(recs.ids) & set(loaded.user_history("u0"))


def test_item_item_explanation_terms_sum_to_the_score() -> None:
    model = item_model.train(_matrix(), USERS, ITEMS, CONFIGS[0])
    history = {"a0": 2.0, "a1": 1.0}
    vector, _ = model.user_vector(None, history)
    assert vector is not None
    scores = model.item_scores(vector)
    target = ITEMS[int(np.argmax(np.where(np.isin(ITEMS, list(history)), -np.inf, scores)))]
    explanation = model.explain(history, target)
    assert explanation.score == pytest.approx(float(scores[ITEMS.index(target)]), rel=1e-5)
    ids, _sims = model.similar_items("b0", k=3)
    assert ids and all(i.startswith("b") for i in ids) and "b0" not in ids


def test_service_folds_live_events_into_an_item_item_model() -> None:
    """A user the model never saw gets their cluster from two live clicks, through the
    service's own path (merge_rows, recalculate_rows, item_scores, exclusions)."""
    model = item_model.train(_matrix(), USERS, ITEMS, CONFIGS[1])
    store = InMemoryFeatureStore()
    now = time.time()
    store.apply_events([FeatureEvent("e1", "new", "b1", "click", 2.0, now),
                        FeatureEvent("e2", "new", "b2", "click", 2.0, now)])  # fmt: skip
    reader = StateReader(store, unavailable=(OSError,), retry_s=60.0)
    service = RecommenderService(lambda: model, reader, Limits())
    result = service.recommend(RecommendQuery("new", 3))
    ids = [i.item_id for i in result.items]
    assert ids and all(i.startswith("b") for i in ids)
    assert not {"b1", "b2"} & set(ids)


def test_als_artifacts_still_load_as_the_als_model(tmp_path: Path) -> None:
    from services.recommender.training import TrainConfig, UserItemMatrix, train

    data = UserItemMatrix(_matrix(), USERS, ITEMS)
    model = train(data, TrainConfig(factors=4, iterations=2))
    version = model.save(tmp_path)
    loaded = item_model.load(tmp_path / version)
    assert type(loaded) is Model
