"""The model wrapper on a deterministic checkerboard: two user groups, two item groups.

Users 0-9 like items a0-a9 (genre "A"), users 10-19 like items b0-b9 (genre "B"); each user
misses two items of their group, which a working model must recommend first.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import InvalidArgumentError, NotFoundError
from recsys.weights import EventWeights
from services.recommender.model import (
    SOURCE_FOLDIN,
    SOURCE_MODEL,
    SOURCE_POPULAR,
    SOURCE_TRENDING,
    ItemMeta,
    Model,
    recency_weighted,
)
from services.recommender.training import TrainConfig, build_matrix, drop_users, train
from services.recommender.weights import Weighting, WeightingConfig

A = [f"a{i}" for i in range(10)]
B = [f"b{i}" for i in range(10)]
COLD = "c0"  # in the catalogue, never interacted with, genre A


def _checkerboard() -> tuple[list[str], list[str], list[float]]:
    users, items, weights = [], [], []
    for u in range(20):
        group = A if u < 10 else B
        for j, item in enumerate(group):
            if j in (u % 10, (u + 3) % 10):
                continue  # the two held-out items of this user
            users.append(f"u{u}")
            items.append(item)
            weights.append(1.0 + (j % 3))
    return users, items, weights


@pytest.fixture(scope="module")
def model() -> Model:
    users, items, weights = _checkerboard()
    meta = {i: ItemMeta(i, i.upper(), 2000, ("A",)) for i in A}
    meta.update({i: ItemMeta(i, i.upper(), 2000, ("B",)) for i in B})
    meta[COLD] = ItemMeta(COLD, "Cold", 2001, ("A",))
    data = build_matrix(users, items, weights, item_ids=[*A, *B, COLD])
    config = TrainConfig(factors=8, regularization=0.1, iterations=20, num_threads=1)
    return train(data, config, items=meta)


def test_known_user_gets_unseen_items_of_own_group(model: Model) -> None:
    recs = model.recommend("u0", k=3)
    assert recs.source == SOURCE_MODEL
    # the two held-out items, and the cold genre-A item (placed at the genre centroid)
    assert set(recs.ids) == {"a0", "a3", COLD}
    assert all(r in model.user_history("u0") for r in recs.reasons)
    assert list(recs.scores) == sorted(recs.scores, reverse=True)


def test_unknown_user_is_folded_in_from_latest_items(model: Model) -> None:
    recs = model.recommend("new-user", {"b1": 2.0, "b2": 1.0, "b5": 1.0}, k=5)
    assert recs.source == SOURCE_FOLDIN
    assert set(recs.ids) <= set(B) - {"b1", "b2", "b5"}
    assert set(recs.reasons) <= {"b1", "b2", "b5"}


def test_fold_in_matches_implicit_recalculate_user(model: Model) -> None:
    """Our closed-form fold-in is implicit's, given the same confidences."""
    from implicit.cpu.als import AlternatingLeastSquares

    items = {"a1": 3.0, "a2": 1.0, "b4": 2.0}
    als = AlternatingLeastSquares(factors=model.n_factors, regularization=model.regularization)
    als.item_factors = np.array(model.item_factors)
    rows = np.array([model.item_row(i) for i in items])
    conf = model.weighting.transform_row(rows, np.array(list(items.values()), dtype=np.float32))
    row = sp.csr_matrix((conf, (np.zeros(3, dtype=int), rows)), shape=(1, model.n_items))
    expected = als.recalculate_user(0, row)
    np.testing.assert_allclose(model.recalculate_user(items), expected, rtol=1e-3, atol=1e-4)


def test_exclude_and_seen_filters(model: Model) -> None:
    recs = model.recommend("u0", k=30, exclude={"a0"})
    assert "a0" not in recs.ids
    assert not set(recs.ids) & set(model.user_history("u0"))
    everything = model.recommend("u0", k=30, filter_seen=False)
    assert set(model.user_history("u0")) <= set(everything.ids)


def test_category_filter(model: Model) -> None:
    recs = model.recommend("u0", k=5, filter_categories=["b"])
    assert recs.ids and set(recs.ids) <= set(B)


def test_popularity_fallback_without_history(model: Model) -> None:
    recs = model.recommend("nobody", None, k=3)
    assert recs.source == SOURCE_POPULAR and recs.reasons == [None] * 3
    counts = {i: model.item_popularity[model.item_row(i)] for i in model.item_ids}
    assert [counts[i] for i in recs.ids] == sorted(counts.values(), reverse=True)[:3]
    ids, _ = model.popular(3, exclude=set(recs.ids[:1]))
    assert recs.ids[0] not in ids
    # items unknown to the model cannot be folded in: popularity, not an error
    assert model.recommend("nobody", {"zzz": 1.0}, k=3).source == SOURCE_POPULAR


def test_explain_contributions_sum_to_fold_in_score(model: Model) -> None:
    items = {"a1": 3.0, "a2": 1.0, "a4": 2.0}
    target = "a0"
    explanation = model.explain(items, target, k=10)
    score = float(model.recalculate_user(items) @ model.item_factors[model.item_row(target)])
    assert explanation.score == pytest.approx(score, rel=1e-4)
    assert sum(c for _, c in explanation.contributions) == pytest.approx(score, rel=1e-4)
    assert {i for i, _ in explanation.contributions} == set(items)


def test_similar_items_stay_in_group(model: Model) -> None:
    ids, scores = model.similar_items("a1", k=5)
    assert "a1" not in ids and set(ids) <= {*A, COLD}
    assert list(scores) == sorted(scores, reverse=True)
    with pytest.raises(NotFoundError):
        model.similar_items("nope")
    with pytest.raises(InvalidArgumentError):
        model.similar_items("a1", k=0)


def test_cold_item_gets_content_vector_and_genre_neighbours(model: Model) -> None:
    row = model.item_row(COLD)
    assert model.cold_items[row] and model.item_popularity[row] == 0
    assert np.linalg.norm(model.item_factors[row]) > 0  # placed among genre-A items
    ids, _ = model.similar_items(COLD, k=5)
    assert set(ids) <= set(A)
    # so a genre-A fan can be recommended the new item
    recs = model.recommend("u0", k=len(A) + 1, filter_seen=True)
    assert COLD in recs.ids


def test_fold_in_is_fast() -> None:
    """Serving folds in on every request: 20 items × 64 factors must stay well under 1 ms."""
    rng = np.random.default_rng(0)
    n_items, f = 5000, 64
    weighting = Weighting(WeightingConfig(scheme="bm25"), np.ones(n_items, np.float32), n_items)
    m = Model(
        version="v",
        item_ids=[str(i) for i in range(n_items)],
        user_ids=[],
        item_factors=rng.normal(size=(n_items, f)).astype(np.float32) * 0.1,
        user_factors=np.zeros((0, f), np.float32),
        regularization=0.1,
        weighting=weighting,
        item_popularity=np.ones(n_items, np.float32),
    )
    items = {str(i): 1.0 + i % 4 for i in rng.choice(n_items, 20, replace=False)}
    m.recalculate_user(items)
    runs = []
    for _ in range(200):
        t = time.perf_counter()
        m.recalculate_user(items)
        runs.append(time.perf_counter() - t)
    assert float(np.median(runs)) < 1e-3


def test_weighting_row_transform_equals_matrix_transform() -> None:
    users, items, weights = _checkerboard()
    data = build_matrix(users, items, weights)
    for scheme in ("none", "bm25", "log"):
        w = Weighting.fit(WeightingConfig(scheme=scheme, alpha=2.0), data.matrix)
        full = w.transform(data.matrix)
        u = 3
        lo, hi = data.matrix.indptr[u], data.matrix.indptr[u + 1]
        row = w.transform_row(data.matrix.indices[lo:hi], data.matrix.data[lo:hi])
        np.testing.assert_allclose(row, full.data[full.indptr[u] : full.indptr[u + 1]], rtol=1e-6)
        assert (full.data > 0).all()


def test_event_weights_defaults_and_ratings() -> None:
    ew = EventWeights()
    assert [ew.weight(t) for t in ("view", "click", "add-to-cart", "purchase")] == [1, 2, 4, 8]
    assert ew.weight("rating", 4.0) == 4.0
    with pytest.raises(ValueError):
        ew.weight("teleport")
    custom = EventWeights.from_env({"EVENT_WEIGHTS": "view=1,click=2,add_to_cart=4,purchase=20"})
    assert custom.weight("purchase") == 20.0


def test_rating_weights_vectorised_equals_per_event() -> None:
    ew = EventWeights(rating_scale=0.5)
    ratings = np.array([1.0, 3.0, 5.0])
    np.testing.assert_allclose(
        ew.rating_weights(ratings), [ew.weight("rating", r) for r in ratings]
    )
    with pytest.raises(ValueError):
        ew.rating_weights(np.array([1.0, np.nan]))


def test_weighting_offset_makes_low_ratings_weak_positives() -> None:
    """Offset 3: a 1-3 star rating becomes a weak (floor) positive, 5 stars twice a 4."""
    m = sp.csr_matrix(np.array([[1.0, 3.0, 4.0, 5.0]], dtype=np.float32))
    w = Weighting.fit(WeightingConfig(scheme="none", offset=3.0, offset_floor=0.05), m)
    np.testing.assert_allclose(w.transform(m).data, [0.05, 0.05, 1.0, 2.0], rtol=1e-6)
    row = w.transform_row(np.arange(4), m.data)
    np.testing.assert_allclose(row, [0.05, 0.05, 1.0, 2.0], rtol=1e-6)


def test_recency_weighted_boosts_newest_and_sums_repeats() -> None:
    events = [("x", 1.0), ("y", 1.0), ("x", 1.0), ("z", 2.0)]
    assert recency_weighted(events) == {"x": 2.0, "y": 1.0, "z": 2.0}
    w = recency_weighted(events, boost=4.0, half_life=1.0)
    assert w["z"] == pytest.approx(2.0 * 5.0)  # newest: 1 + 4
    assert w["y"] == pytest.approx(1.0 + 4.0 * 2.0**-2)
    assert w["x"] == pytest.approx((1.0 + 4.0 * 2.0**-3) + (1.0 + 4.0 * 2.0**-1))


def test_prior_is_off_by_default_and_blends_when_given(model: Model) -> None:
    """Existing callers (no ``prior``) get exactly the old lists; a heavy prior pulls its item
    into a fold-in list; a user with no history gets the prior's best unseen items."""
    history = {"b1": 2.0, "b2": 1.0, "b5": 1.0}
    plain = model.recommend("new-user", history, k=3)
    zero = model.recommend("new-user", history, k=3, prior={"a7": 50.0}, prior_weight=0.0)
    assert zero.ids == plain.ids
    assert "a7" not in plain.ids
    pulled = model.recommend("new-user", history, k=3, prior={"a7": 50.0}, prior_weight=5.0)
    assert pulled.ids[0] == "a7" and pulled.source == SOURCE_FOLDIN
    cold = model.recommend(None, None, k=2, prior={"a7": 5.0, "b9": 9.0, "a1": 1.0}, exclude=["b9"])
    assert cold.source == SOURCE_TRENDING and cold.ids == ["a7", "a1"]
    empty = model.recommend(None, None, k=2, prior={})
    assert empty.source == SOURCE_POPULAR
    with pytest.raises(InvalidArgumentError):
        model.recommend(None, None, k=2, prior=np.ones(3))


def test_drop_users_leaves_the_forgotten_users_out_of_the_matrix_and_the_model() -> None:
    """Regression: `recsys train` from a data set put users who asked to be forgotten back
    into the model. Their rows go; every item keeps its column (the catalogue is not theirs)."""
    data = build_matrix(["u1", "u2", "u3", "u2"], ["a", "b", "c", "a"], [1.0, 2.0, 3.0, 4.0],
                        item_ids=["a", "b", "c"])  # fmt: skip
    kept = drop_users(data, {"u2", "not-in-data"})
    assert kept.user_ids == ["u1", "u3"] and kept.item_ids == ["a", "b", "c"]
    assert kept.matrix.toarray().tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]
    assert drop_users(data, set()) is data and drop_users(data, {"x"}) is data
    model = train(kept, TrainConfig(factors=2, iterations=2, num_threads=1))
    assert model.user_row("u2") is None and model.user_row("u1") is not None
