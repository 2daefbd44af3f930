"""The served item-item model (EASE, RP3beta, BM25 item-kNN from ``recsys tune``): the same
API as the ALS :class:`~services.recommender.model.Model`, scored as ``transform(x_u) · W``.

Why a subclass of :class:`Model`: the service asks a model for a user's "vector" from rows
and raw weights (``recalculate_rows``) and then for every item's score of that vector
(``item_scores``); for an item-item family the vector is the user's transformed history row
over the catalogue and the score is its product with the sparse item × item matrix ``W``. So
Recommend, BatchRecommend, SimilarItems, Explain, live fold-in of Redis events, exclusions and
category filters all go through the service's one path unchanged, and the ALS path is
untouched. The artifact is the ALS one with zero-width factors plus ``W`` as three CSR arrays
and ``config["family"]``; :func:`load` picks the class from that.

The vector is dense over the catalogue (4 bytes an item, cached per user like an ALS
vector): fine up to a few hundred thousand items.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from services.recommender import artifact, families
from services.recommender.model import Explanation, ItemMeta, Model, top_k
from services.recommender.weights import Weighting, WeightingConfig

W_ARRAYS = ("item_item_indptr", "item_item_indices", "item_item_data")


class ItemItemModel(Model):
    """An item-item family behind the :class:`Model` API."""

    def __init__(self, *, w: sp.csr_matrix, input_scheme: str, power: float, **kwargs: Any) -> None:
        n_items = len(kwargs["item_ids"])
        n_users = len(kwargs["user_ids"])
        kwargs.setdefault("item_factors", np.zeros((n_items, 0), dtype=np.float32))
        kwargs.setdefault("user_factors", np.zeros((n_users, 0), dtype=np.float32))
        kwargs.setdefault("regularization", 0.0)
        kwargs.setdefault(
            "weighting", Weighting(WeightingConfig(scheme="none"), np.ones(n_items), n_items)
        )
        super().__init__(**kwargs)
        if w.shape != (n_items, n_items):
            raise ValueError("the item-item matrix and the item ids disagree in size")
        self.w = sp.csr_matrix(w, dtype=np.float32)
        self._wt = sp.csr_matrix(self.w.T)  # row i: what each history item adds to item i
        self.input_scheme = input_scheme
        self.power = float(power)
        self.config["family"] = self.config.get("family", "item_item")
        self.config["input"] = input_scheme
        self.config["power"] = self.power

    @property
    def family(self) -> str:
        return str(self.config["family"])

    def _transform(self, raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float32)
        if self.input_scheme == "log":
            x = np.log1p(x)
        elif self.input_scheme == "binary":
            x = np.ones_like(x)
        if self.power != 1.0:
            x = np.power(x, np.float32(self.power))
        return x

    # The service's "vector": the transformed history row over the catalogue.
    def recalculate_rows(self, rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
        vec = np.zeros(self.n_items, dtype=np.float32)
        if rows.size:
            np.add.at(vec, rows, raw.astype(np.float32))
            nz = vec > 0
            vec[nz] = self._transform(vec[nz])
        return vec

    def item_scores(self, vector: np.ndarray) -> np.ndarray:
        if vector.size != self.n_items:  # a zero-width "trained vector": no history row
            return np.zeros(self.n_items, dtype=np.float32)
        out: np.ndarray = np.asarray(self._wt @ vector, dtype=np.float32)
        return out

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(sp.csr_matrix(vectors) @ self.w, dtype=np.float32)
        return out

    def user_vector(
        self, user_id: str | None, user_items: Mapping[str, float] | None = None
    ) -> tuple[np.ndarray | None, str]:
        """A fold-in of ``user_items`` if any is known, else the user's training history."""
        if user_items:
            rows, raw = self._rows(user_items)
            if rows.size:
                return self.recalculate_rows(rows, raw), "foldin"
        if user_id is not None:
            rows, raw = self.user_history_rows(user_id)
            if rows.size:
                return self.recalculate_rows(rows, raw), "model"
        return None, "popular"

    def _contributions(self, user_items: Mapping[str, float], rec_rows: np.ndarray) -> Any:
        rows, raw = self._rows(user_items)
        vec = self.recalculate_rows(rows, raw)
        hist = np.flatnonzero(vec)
        contrib = self.w[hist][:, rec_rows].toarray() * vec[hist, None]  # history × recs
        return hist, contrib

    def _reasons(self, user_items: Mapping[str, float], rec_rows: np.ndarray) -> list[str | None]:
        hist, contrib = self._contributions(user_items, rec_rows)
        if hist.size == 0:
            return [None] * len(rec_rows)
        top = np.argmax(contrib, axis=0)
        return [
            self.item_ids[int(hist[j])] if contrib[j, c] > 0 else None for c, j in enumerate(top)
        ]

    def explain(self, user_items: Mapping[str, float], item_id: str, k: int = 10) -> Explanation:
        """Each history item's term ``x_j · W[j, i]``: they sum to the item's score exactly."""
        target = self.item_row(item_id)
        hist, contrib = self._contributions(user_items, np.array([target]))
        if hist.size == 0:
            return Explanation(0.0, [])
        c = contrib[:, 0]
        order = np.argsort(-c, kind="stable")[:k]
        return Explanation(
            float(c.sum()), [(self.item_ids[int(hist[j])], float(c[j])) for j in order]
        )

    def similar_items(
        self, item_id: str, k: int = 10, *, filter_categories: Any = None
    ) -> tuple[list[str], np.ndarray]:
        """The items ``item_id`` adds most to (its row of ``W``), the item itself excluded."""
        row = self.item_row(item_id)
        if k <= 0:
            from recsys.errors import InvalidArgumentError

            raise InvalidArgumentError(f"k must be positive, got {k}")
        allowed = self._candidate_mask([row], filter_categories)
        sims = np.asarray(self.w[row].toarray()).ravel().astype(np.float32)
        sims[~allowed] = -np.inf
        sims[sims <= 0] = -np.inf
        best = top_k(sims, k)
        best = best[np.isfinite(sims[best])]
        return [self.item_ids[int(r)] for r in best], sims[best]

    def _rank_rows(
        self, vector: np.ndarray, k: int, exclude_rows: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.item_scores(vector)[rows]
        if exclude_rows.size:
            scores[np.isin(rows, exclude_rows)] = -np.inf
        best = top_k(scores, k)
        return rows[best], scores[best]

    def save(
        self,
        store: str | os.PathLike[str],
        *,
        make_current: bool = True,
        index_min_items: int = 0,
    ) -> str:
        """Published without an ANN index at any size: the index searches factor vectors,
        and an item-item model has none (it scores the whole catalogue exactly)."""
        del index_min_items
        return super().save(store, make_current=make_current, index_min_items=sys.maxsize)

    def to_artifact(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, json_files = super().to_artifact()
        arrays["item_item_indptr"] = np.asarray(self.w.indptr, dtype=np.int64)
        arrays["item_item_indices"] = np.asarray(self.w.indices, dtype=np.int32)
        arrays["item_item_data"] = np.asarray(self.w.data, dtype=np.float32)
        return arrays, json_files

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expansion: int = 200) -> ItemItemModel:
        del expansion  # no ANN index: see :meth:`save`
        base = Model.load(path)
        reader = artifact.ArtifactReader(path)
        n = base.n_items
        w = sp.csr_matrix(
            (
                np.asarray(reader.array("item_item_data")),
                np.asarray(reader.array("item_item_indices")),
                np.asarray(reader.array("item_item_indptr")),
            ),
            shape=(n, n),
        )
        history = base._history
        return cls(
            w=w,
            input_scheme=str(base.config["input"]),
            power=float(base.config["power"]),
            version=base.version,
            item_ids=base.item_ids,
            user_ids=base.user_ids,
            item_popularity=base.item_popularity,
            cold_items=base.cold_items,
            history=history,
            items=base.items,
            config=base.config,
            metrics=base.metrics,
        )


def load(path: str | os.PathLike[str], *, expansion: int = 200) -> Model:
    """The model at ``path``, of the class its config names (ALS when it names none);
    ``expansion`` is the ALS model's ANN search beam (an item-item model has no index)."""
    reader = artifact.ArtifactReader(path)
    family = reader.json("config").get("family", "als")
    if family in families.ITEM_ITEM:
        return ItemItemModel.load(path)
    return Model.load(path, expansion=expansion)


def train(
    matrix: sp.csr_matrix,
    user_ids: list[str],
    item_ids: list[str],
    config: families.FamilyConfig,
    *,
    items: Mapping[str, ItemMeta] | None = None,
    version: str | None = None,
) -> ItemItemModel:
    """Fit ``config``'s item-item family on the raw summed weights and wrap it for serving;
    the raw matrix is kept as the users' history (for exclusion, fold-in and explanations)."""
    import time

    if config.family not in families.ITEM_ITEM:
        raise ConfigError(f"{config.family} is not an item-item family")
    started, cpu = time.perf_counter(), time.process_time()
    raw = sp.csr_matrix(matrix, dtype=np.float32)
    raw.sort_indices()
    fitted = families.build(config, raw)
    assert isinstance(fitted, families.ItemItem)
    popularity = np.diff(raw.tocsc().indptr).astype(np.float32)
    model = ItemItemModel(
        w=fitted.w,
        input_scheme=fitted.input,
        power=fitted.power,
        version=version or artifact.new_version_id(),
        item_ids=item_ids,
        user_ids=user_ids,
        item_popularity=popularity,
        cold_items=popularity == 0,
        history=(raw.indptr, raw.indices, raw.data),
        items=items,
        config={
            "family": config.family,
            "params": dict(config.params),
            "n_users": raw.shape[0],
            "n_items": raw.shape[1],
            "nnz": int(raw.nnz),
            "w_nnz": int(fitted.w.nnz),
        },
    )
    model.config["train_s"] = time.perf_counter() - started
    model.config["train_cpu_s"] = time.process_time() - cpu
    model.config["train_phases_s"] = {"fit_s": round(model.config["train_s"], 4)}
    return model
