"""The ANN index (services/recommender/ann.py) and ``Model.rank``: published with the model,
memory-mapped on load, and the same answers as exact scoring wherever the index is exact
about them (exclusions, narrow filters, fallbacks), close to them elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.errors import DataError
from services.recommender import ann, artifact
from services.recommender.model import ItemMeta, Model
from services.recommender.service import (
    Limits,
    RecommenderService,
    RecommendQuery,
    StateReader,
    make_filters,
)
from services.recommender.weights import Weighting, WeightingConfig

N_ITEMS = 20_000
FACTORS = 16


def random_model(n_items: int = N_ITEMS, seed: int = 5) -> Model:
    rng = np.random.default_rng(seed)
    y = (rng.standard_normal((n_items, FACTORS)) / 4).astype(np.float32)
    users = (rng.standard_normal((50, FACTORS)) / 4).astype(np.float32)
    item_ids = [f"i{n}" for n in range(n_items)]
    indices = np.concatenate([rng.choice(n_items, 10, replace=False) for _ in range(50)])
    return Model(
        version=artifact.new_version_id(),
        item_ids=item_ids,
        user_ids=[f"u{n}" for n in range(50)],
        item_factors=y,
        user_factors=users,
        regularization=0.05,
        weighting=Weighting(WeightingConfig(scheme="none"), np.ones(n_items, np.float32), n_items),
        item_popularity=np.ones(n_items, dtype=np.float32),
        history=(
            np.arange(0, 501, 10, dtype=np.int64),
            indices.astype(np.int32),
            np.full(500, 2.0, dtype=np.float32),
        ),
        items={i: ItemMeta(i, genres=(f"g{n % 20}",)) for n, i in enumerate(item_ids)},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ann-models")
    random_model().save(path, index_min_items=1)
    return path


@pytest.fixture(scope="module")
def model(store: Path) -> Model:
    return Model.load(store)


def vectors(n: int = 50) -> np.ndarray:
    return (np.random.default_rng(9).standard_normal((n, FACTORS)) / 4).astype(np.float32)


SEARCH = ann.SearchSettings()


def test_the_index_is_published_with_the_model_and_memory_mapped(store: Path, model: Model) -> None:
    reader = artifact.ArtifactReader(store)
    assert ann.INDEX_FILE in reader.manifest["files"]
    assert model.index is not None
    assert model.index.nbytes == reader.manifest["files"][ann.INDEX_FILE]


def test_a_small_catalog_is_published_without_an_index(tmp_path: Path) -> None:
    random_model(1000).save(tmp_path)  # below ann.DEFAULT_MIN_ITEMS
    assert Model.load(tmp_path).index is None


def test_a_truncated_index_fails_the_load(store: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifact.resolve(store), copy)
    with open(copy / ann.INDEX_FILE, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(DataError, match="manifest"):
        Model.load(copy)


def test_recall_against_exact_scoring(model: Model) -> None:
    none = np.empty(0, dtype=np.int64)
    hits = 0
    for v in vectors():
        rows, scores = model.rank(v, 10, none, None, SEARCH)
        exact, _ = model.rank(v, 10, none)
        hits += len(set(rows.tolist()) & set(exact.tolist()))
        # re-ranked exactly: each score is the float32 product, best first
        np.testing.assert_allclose(scores, model.item_factors[rows] @ v, rtol=1e-5)
        assert (np.diff(scores) <= 0).all()
    assert hits / 500 >= 0.95


def test_excluded_rows_and_categories_are_never_returned(model: Model) -> None:
    for v in vectors(20):
        exact, _ = model.rank(v, 50, np.empty(0, dtype=np.int64))
        exclude = exact[:30]  # the 30 best are all excluded
        rows, _ = model.rank(v, 10, exclude, ["g1", "g2", "g3"], SEARCH)
        assert len(rows) == 10
        assert not set(rows.tolist()) & set(exclude.tolist())
        assert {int(r) % 20 for r in rows} <= {1, 2, 3}


def test_a_narrow_filter_is_scored_exactly(model: Model) -> None:
    exclude = np.arange(0, 2000, 7, dtype=np.int64)
    for v in vectors(20):
        rows, scores = model.rank(v, 10, exclude, ["g3"], SEARCH)  # 5% < exact_below
        want, want_scores = model.rank(v, 10, exclude, ["g3"])
        assert rows.tolist() == want.tolist()
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_a_search_left_with_too_few_items_falls_back_to_exact(model: Model) -> None:
    exclude = np.arange(N_ITEMS - 5, dtype=np.int64)  # five items left
    v = vectors(1)[0]
    rows, _ = model.rank(v, 10, exclude, None, ann.SearchSettings(fetch=10))
    assert sorted(rows.tolist()) == list(range(N_ITEMS - 5, N_ITEMS))


def test_the_service_uses_the_index_only_from_ann_min_items(model: Model) -> None:
    from recsys.store.memory import InMemoryFeatureStore

    reader = StateReader(InMemoryFeatureStore())
    calls: list[int] = []
    index = model.index
    assert index is not None
    search = index.search

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return search(*args, **kwargs)  # type: ignore[arg-type]

    index.search = counting  # type: ignore[method-assign,assignment]
    try:
        exact = RecommenderService(lambda: model, reader, Limits(ann_min_items=N_ITEMS + 1))
        approx = RecommenderService(lambda: model, reader, Limits(ann_min_items=N_ITEMS))
        query = RecommendQuery("u1", 10, make_filters(("i5",)))
        want = exact.recommend(query)
        assert not calls
        got = approx.recommend(query)
        assert calls
    finally:
        del index.search
    assert len({i.item_id for i in got.items} & {i.item_id for i in want.items}) >= 8
    assert not {"i5", *model.user_history("u1")} & {i.item_id for i in got.items}
