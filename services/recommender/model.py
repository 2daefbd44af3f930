"""The served model: an ALS factorisation with external ids at its edge.

Speaks implicit's vocabulary (``recommend``, ``similar_items``, ``recalculate_user``,
``explain``) but takes and returns *external* ids (strings), so callers never see row
numbers. Pure numpy/scipy: no I/O besides :meth:`Model.load`, no network clients, so the
gRPC layer wraps it and unit tests drive it directly.

Fold-in
    A user's vector is the closed-form ALS solution given the item factors Y:
    ``x = (YᵀY + λI + Yᵀ(Cᵤ − I)Y)⁻¹ YᵀCᵤpᵤ`` over the user's items only, with ``YᵀY + λI``
    precomputed at load. With ~20 items and 64 factors this is a 64×64 Cholesky solve (tens of
    microseconds), so the latest interactions (from Redis) are folded in on every request and
    users the model never saw get personalised results from their first event.
Explanations
    The same decomposition splits a fold-in score into per-item contributions
    ``cⱼ · yᵢᵀ W⁻¹ yⱼ`` (Hu, Koren & Volinsky 2008, §5; implicit's ``explain``), so "because
    you watched X" names the history item that drove the recommendation, exactly.
Thread safety
    Everything is read-only after construction (arrays may be read-only memory maps), so one
    instance serves concurrent requests without locks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from recsys.errors import InvalidArgumentError, NotFoundError
from services.recommender import ann, artifact
from services.recommender.content import GenreIndex
from services.recommender.weights import Weighting, WeightingConfig

SOURCE_MODEL = "model"  # the user's trained vector
SOURCE_FOLDIN = "foldin"  # a vector computed from the interactions passed in
SOURCE_POPULAR = "popular"  # no usable history: most popular items
SOURCE_TRENDING = "trending"  # no usable history, a ``prior`` was given: its best items

# Weight of the trending prior against the fold-in score when a caller passes ``prior`` and the
# model's config names none (the replay protocol's validation choice, docs/evaluation.md).
DEFAULT_PRIOR_WEIGHT = 0.5


@dataclass(frozen=True)
class ItemMeta:
    item_id: str
    title: str = ""
    year: int | None = None
    genres: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "year": self.year, "genres": list(self.genres)}


@dataclass(frozen=True)
class Recommendations:
    """``ids`` best first with their ``scores``; ``reasons[j]`` is the item id of the user's
    interaction that contributed most to ``ids[j]`` (None for popularity results)."""

    ids: list[str]
    scores: np.ndarray
    reasons: list[str | None]
    source: str

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Explanation:
    score: float
    contributions: list[tuple[str, float]] = field(default_factory=list)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores, best first (argpartition: O(n))."""
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = part[np.argsort(-scores[part], kind="stable")]
    out: np.ndarray = order[np.isfinite(scores[order])]
    return out


def recency_weighted(
    events: Iterable[tuple[str, float]], *, boost: float = 0.0, half_life: float = 10.0
) -> dict[str, float]:
    """Per-item raw weights from a user's events *oldest first*, the newest ones boosted.

    The ``j``-th newest event (0 = newest) has its weight multiplied by
    ``1 + boost · 2^(−j / half_life)``: a user's next items follow their latest ones more than
    their old ones, and a fold-in only sees totals, so the order has to be folded into the
    weights. Repeated items sum (each event at its own position). ``boost`` 0 is plain sums.
    """
    seq = list(events)
    out: dict[str, float] = {}
    n = len(seq)
    for pos, (item, weight) in enumerate(seq):
        factor = 1.0 + boost * 2.0 ** (-(n - 1 - pos) / half_life) if boost else 1.0
        out[item] = out.get(item, 0.0) + float(weight) * factor
    return out


def usable(rows: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (rows int64, raw weights float32) a fold-in uses: known rows (``>= 0``) with a
    positive, finite weight."""
    keep = (rows >= 0) & (raw > 0) & np.isfinite(raw)  # NaN > 0 is False
    return rows[keep], np.asarray(raw[keep], dtype=np.float32)


def gram(y: np.ndarray, block: int = 16384) -> np.ndarray:
    """``YᵀY`` in float64, accumulated over row blocks so only one block is ever converted."""
    f = y.shape[1]
    out = np.zeros((f, f), dtype=np.float64)
    for lo in range(0, y.shape[0], block):
        b = np.asarray(y[lo : lo + block], dtype=np.float64)
        out += b.T @ b
    return out


class Model:
    """An ALS model plus what serving needs: id maps, popularity, cold-item vectors, history."""

    def __init__(
        self,
        *,
        version: str,
        item_ids: Sequence[str],
        user_ids: Sequence[str],
        item_factors: np.ndarray,
        user_factors: np.ndarray,
        regularization: float,
        weighting: Weighting,
        item_popularity: np.ndarray,
        cold_items: np.ndarray | None = None,
        history: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        items: Mapping[str, ItemMeta] | None = None,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        n_items, n_factors = item_factors.shape
        if len(item_ids) != n_items or user_factors.shape[0] != len(user_ids):
            raise ValueError("id maps and factor matrices disagree in size")
        if user_factors.shape[1] != n_factors or item_popularity.shape[0] != n_items:
            raise ValueError("factor widths or popularity length disagree")
        self.version = version
        self.item_ids: list[str] = list(item_ids)
        self.user_ids: list[str] = list(user_ids)
        self._item_row = {item: i for i, item in enumerate(self.item_ids)}
        self._user_row = {user: u for u, user in enumerate(self.user_ids)}
        if len(self._item_row) != n_items or len(self._user_row) != len(self.user_ids):
            raise ValueError("duplicate ids in the id maps")
        self.item_factors = item_factors
        # Plain ndarray views of the (possibly memory-mapped) arrays for the request path:
        # every operation on an np.memmap goes through Python-level __getitem__ and
        # __array_wrap__, several times a request (docs/benchmarks.md, History, "The
        # handler"). Same memory, no copy.
        self._y: np.ndarray = np.asarray(item_factors)
        self.user_factors = user_factors
        self.regularization = float(regularization)
        self.weighting = weighting
        self.item_popularity = np.asarray(item_popularity, dtype=np.float32)
        self.cold_items = (
            np.zeros(n_items, dtype=bool) if cold_items is None else np.asarray(cold_items, bool)
        )
        self._history = (
            None if history is None else (np.asarray(history[0]), np.asarray(history[1]),
                                          np.asarray(history[2]))
        )  # fmt: skip
        self.items: dict[str, ItemMeta] = dict(items or {})
        self.config: dict[str, Any] = dict(config or {})
        self.metrics: dict[str, Any] = dict(metrics or {})
        # Precomputed once: YᵀY + λI for fold-in (f×f), item norms for similar_items,
        # the popularity order for the fallback, the genre index for category filters.
        # Both read the (possibly memory-mapped) factors in place: no full-size temporaries.
        self._yty_reg = gram(item_factors) + self.regularization * np.eye(n_factors)
        norms = np.sqrt(np.einsum("ij,ij->i", item_factors, item_factors)).astype(np.float32)
        self._item_norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        self._popular_order = np.argsort(-self.item_popularity, kind="stable")
        self._genres = GenreIndex(
            [self.items[i].genres if i in self.items else () for i in self.item_ids]
        )
        # The ANN index over the item factors (set by load when the artifact has one) and
        # each category filter's (mask, share of the catalog, rows), built on first use.
        self.index: ann.ItemIndex | None = None
        self._filters: dict[frozenset[str], tuple[np.ndarray, float, np.ndarray]] = {}

    # ----------------------------------------------------------------- properties
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_factors(self) -> int:
        return int(self.item_factors.shape[1])

    @property
    def genres(self) -> list[str]:
        return list(self._genres.genres)

    def has_item(self, item_id: str) -> bool:
        return item_id in self._item_row

    def has_user(self, user_id: str) -> bool:
        return user_id in self._user_row

    def user_row(self, user_id: str) -> int | None:
        return self._user_row.get(user_id)

    def item_row(self, item_id: str) -> int:
        try:
            return self._item_row[item_id]
        except KeyError:
            raise NotFoundError(f"item {item_id!r} is not in model {self.version}") from None

    def user_history(self, user_id: str) -> dict[str, float]:
        """The user's raw training weights (item id → weight); empty for unknown users."""
        rows, weights = self.user_history_rows(user_id)
        ids = self.item_ids
        return dict(zip([ids[r] for r in rows.tolist()], weights.tolist(), strict=True))

    def user_history_rows(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's training history as (item rows int64, raw weights float32); empty for
        unknown users. Copies, so callers may keep them after the model's maps are closed."""
        u = self._user_row.get(user_id)
        if u is None or self._history is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        indptr, indices, data = self._history
        lo, hi = int(indptr[u]), int(indptr[u + 1])
        return (
            np.array(indices[lo:hi], dtype=np.int64),
            np.array(data[lo:hi], dtype=np.float32),
        )

    def lookup_rows(self, ids: Iterable[str]) -> np.ndarray:
        """Each id's row, -1 for an id the model does not know (int64, in the ids' order).

        ``map`` over the dict's ``get`` rather than a generator: no Python frame per id, a
        third less CPU for the ~100 live items of a request (docs/benchmarks.md, History,
        "Approximate candidate retrieval and the Recommend margin")."""
        return np.fromiter(map(self._item_row.get, ids, repeat(-1)), dtype=np.int64)

    # ------------------------------------------------------------------ fold-in
    def _rows(self, user_items: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Known items with positive weight as (rows, raw weights); unknown items are ignored
        because the model has no vector for them (they still count as seen for exclusion)."""
        vals = np.fromiter(user_items.values(), dtype=np.float64, count=len(user_items))
        return usable(self.lookup_rows(user_items), vals)

    def _normal_matrix(
        self, rows: np.ndarray, raw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(confidences, Yᵤ, W = YᵀY + λI + Yᵤᵀ(Cᵤ − I)Yᵤ): the user's normal equations."""
        conf = self.weighting.transform_row(rows, raw)
        yu = self._y[rows]
        # The user's term in float32 (the factors' precision: cheaper than float64 at a
        # negligible relative difference, docs/benchmarks.md, History, "The handler"),
        # added to the float64 YᵀY + λI.
        a = self._yty_reg + (yu.T * (conf - np.float32(1.0))) @ yu
        return conf.astype(np.float64), yu.astype(np.float64), a

    def _system(self, rows: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """(confidences, Yᵤ, Cholesky factor of W) for explanations."""
        conf, yu, a = self._normal_matrix(rows, raw)
        return conf, yu, scipy.linalg.cho_factor(a, check_finite=False)

    def recalculate_user(self, user_items: Mapping[str, float]) -> np.ndarray:
        """The ALS user vector for these raw interaction weights (zeros if none are known)."""
        return self.recalculate_rows(*self._rows(user_items))

    def recalculate_rows(self, rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """:meth:`recalculate_user` for items given as rows with positive, finite raw weights
        (what :func:`usable` keeps): the request path resolves ids to rows once and folds in
        from arrays, without a Python loop over the items."""
        if rows.size == 0:
            return np.zeros(self.n_factors, dtype=np.float32)
        conf, yu, a = self._normal_matrix(rows, raw)
        # One LAPACK call (Cholesky + solve): scipy's wrappers cost more than the maths here.
        _, x, info = lapack.dposv(a, yu.T @ conf, overwrite_a=True, overwrite_b=True)
        if info != 0:  # not positive definite: cannot happen with positive confidences
            x = np.linalg.lstsq(self._normal_matrix(rows, raw)[2], yu.T @ conf, rcond=None)[0]
        out: np.ndarray = x.astype(np.float32)
        return out

    def user_vector(
        self, user_id: str | None, user_items: Mapping[str, float] | None = None
    ) -> tuple[np.ndarray | None, str]:
        """The vector used to score: fold-in of ``user_items`` if given, else the trained one."""
        if user_items:
            rows, raw = self._rows(user_items)
            if rows.size:
                return self.recalculate_rows(rows, raw), SOURCE_FOLDIN
        if user_id is not None:
            u = self._user_row.get(user_id)
            if u is not None:
                return np.asarray(self.user_factors[u], dtype=np.float32), SOURCE_MODEL
        return None, SOURCE_POPULAR

    # ---------------------------------------------------------------- recommend
    def _candidate_mask(
        self,
        exclude_rows: Iterable[int],
        filter_categories: Iterable[str] | None,
    ) -> np.ndarray:
        allowed = np.ones(self.n_items, dtype=bool)
        if filter_categories:
            allowed &= self._genres.mask_any(filter_categories)
        ex = np.fromiter(exclude_rows, dtype=np.int64)
        if ex.size:
            allowed[ex] = False
        return allowed

    def category_mask(self, categories: Iterable[str]) -> np.ndarray:
        """Rows of the items with at least one of ``categories``: the mask ``recommend``
        applies for ``filter_categories``, for callers that score the catalog themselves."""
        return self._candidate_mask((), categories)

    def category_filter(self, categories: Iterable[str]) -> tuple[np.ndarray, float, np.ndarray]:
        """(mask, share of the catalog, rows) of the items with at least one of
        ``categories``; cached per set, since a category request otherwise rebuilds a mask
        over the whole catalog (a few of them at most: a shop's widgets use a handful)."""
        key = frozenset(c.lower() for c in categories)
        found = self._filters.get(key)
        if found is None:
            mask = self._genres.mask_any(key)
            rows = np.flatnonzero(mask)
            found = (mask, rows.size / max(self.n_items, 1), rows)
            if len(self._filters) >= 64:
                self._filters = {}
            self._filters[key] = found
        return found

    def rank(
        self,
        vector: np.ndarray,
        k: int,
        exclude_rows: np.ndarray,
        categories: Iterable[str] | None = None,
        search: ann.SearchSettings | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best ``k`` items for ``vector``, best first, leaving out
        ``exclude_rows`` and, with ``categories``, the items having none of them.

        With ``search`` and an index, candidates come from the index and are scored exactly
        (ann.py: over-fetch, re-rank, a narrow filter scored exactly); otherwise every item
        is scored."""
        allowed: np.ndarray | None = None
        share = 1.0
        rows: np.ndarray | None = None
        if categories:
            allowed, share, rows = self.category_filter(categories)
        index = self.index
        if search is not None and index is not None:
            if allowed is not None and share < search.exact_below:
                assert rows is not None
                return self._rank_rows(vector, k, exclude_rows, rows)
            found = index.search(vector, k, exclude_rows, allowed, share, search)
            if found is not None:
                return found
        scores = self.item_scores(vector)
        scores[exclude_rows] = -np.inf
        if allowed is not None:
            scores[~allowed] = -np.inf
        best = top_k(scores, k)
        return best, scores[best]

    def _rank_rows(
        self, vector: np.ndarray, k: int, exclude_rows: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` among ``rows`` (sorted): a narrow filter's own items only."""
        scores = np.asarray(self._y[rows] @ vector, dtype=np.float32)
        if exclude_rows.size:
            scores[np.isin(rows, exclude_rows)] = -np.inf
        best = top_k(scores, k)
        return rows[best], scores[best]

    def _exclude_rows(self, ids: Iterable[str]) -> list[int]:
        return [r for r in (self._item_row.get(i) for i in ids) if r is not None]

    def recommend(
        self,
        user_id: str | None = None,
        user_items: Mapping[str, float] | None = None,
        k: int = 10,
        *,
        exclude: Iterable[str] = (),
        filter_seen: bool = True,
        filter_categories: Iterable[str] | None = None,
        with_reasons: bool = True,
        prior: Mapping[str, float] | np.ndarray | None = None,
        prior_weight: float | None = None,
    ) -> Recommendations:
        """Top-``k`` items for a user.

        ``user_items`` (item id → raw weight, e.g. the Redis weights hash) is folded in when
        given; otherwise a known ``user_id`` uses its trained vector. Without either, or when
        none of the items is known to the model, the most popular items are returned
        (``source == "popular"``). With ``filter_seen`` the user's training history and
        ``user_items`` are excluded; ``exclude`` removes more items (e.g. suppressed ones);
        ``filter_categories`` keeps only items with at least one of those genres.

        ``prior`` (item id → score, or an array over the model's item rows), e.g. the live
        decayed trending counts, turns on the real-time blend: the personal scores, scaled to a
        maximum of 1, plus ``prior_weight`` × ``log1p(prior)`` scaled to a maximum of 1; a user
        with no usable history gets the prior's best items (``source == "trending"``) instead
        of the training popularity. ``prior_weight`` defaults to the model config's
        ``prior_weight`` (else :data:`DEFAULT_PRIOR_WEIGHT`). Without ``prior`` nothing changes.
        """
        if k <= 0:
            raise InvalidArgumentError(f"k must be positive, got {k}")
        items = dict(user_items or {})
        seen: set[str] = set(exclude)
        if filter_seen:
            seen.update(items)
            if user_id is not None:
                seen.update(self.user_history(user_id))
        allowed = self._candidate_mask(self._exclude_rows(seen), filter_categories)
        vector, source = self.user_vector(user_id, items)
        boost = self._prior_scores(prior)
        if vector is None and boost is not None:
            # Popularity (scaled far below one prior step) only breaks ties between items the
            # prior has not seen yet.
            pop = self.item_popularity / max(float(self.item_popularity.max(initial=0.0)), 1.0)
            scores = (boost + 1e-6 * pop).astype(np.float32)
            scores[~allowed] = -np.inf
            best = top_k(scores, k)
            ids = [self.item_ids[int(r)] for r in best]
            return Recommendations(ids, scores[best], [None] * len(ids), SOURCE_TRENDING)
        if vector is None:
            ids, scores = self._popular(k, allowed)
            return Recommendations(ids, scores, [None] * len(ids), SOURCE_POPULAR)
        scores = self.item_scores(vector)
        if boost is not None:
            weight = self.config.get("prior_weight", DEFAULT_PRIOR_WEIGHT)
            weight = float(weight if prior_weight is None else prior_weight)
            scale = max(float(np.abs(scores).max(initial=0.0)), 1e-12)
            scores = (scores / scale + weight * boost).astype(np.float32)
        scores[~allowed] = -np.inf
        best = top_k(scores, k)
        ids = [self.item_ids[int(r)] for r in best]
        reasons: list[str | None] = [None] * len(ids)
        if with_reasons and best.size:
            basis = items if source == SOURCE_FOLDIN else self.user_history(user_id or "")
            reasons = self._reasons(basis, best)
        return Recommendations(ids, scores[best], reasons, source)

    def _prior_scores(self, prior: Mapping[str, float] | np.ndarray | None) -> np.ndarray | None:
        """``log1p(prior)`` over item rows scaled to a maximum of 1 (None if no positive value):
        the log keeps a handful of blockbusters from drowning the personal scores."""
        if prior is None:
            return None
        if isinstance(prior, np.ndarray):
            if prior.shape != (self.n_items,):
                raise InvalidArgumentError(f"prior must have {self.n_items} entries")
            raw = np.asarray(prior, dtype=np.float64)
        else:
            raw = np.zeros(self.n_items, dtype=np.float64)
            for item, value in prior.items():
                row = self._item_row.get(item)
                if row is not None and math.isfinite(value):
                    raw[row] = value
        raw = np.log1p(np.maximum(raw, 0.0))
        top = float(raw.max(initial=0.0))
        if top <= 0.0:
            return None
        out: np.ndarray = raw / top
        return out

    def _reasons(self, user_items: Mapping[str, float], rec_rows: np.ndarray) -> list[str | None]:
        rows, raw = self._rows(user_items)
        if rows.size == 0:
            return [None] * len(rec_rows)
        conf, yu, chol = self._system(rows, raw)
        yr = np.asarray(self._y[rec_rows], dtype=np.float64)
        weighted = scipy.linalg.cho_solve(chol, yr.T, check_finite=False)  # f × k
        contrib = (yu @ weighted) * conf[:, None]  # n_user_items × k
        top = np.argmax(contrib, axis=0)
        return [self.item_ids[int(rows[j])] for j in top]

    def _popular(self, k: int, allowed: np.ndarray) -> tuple[list[str], np.ndarray]:
        order = self._popular_order[allowed[self._popular_order]][:k]
        return [self.item_ids[int(r)] for r in order], self.item_popularity[order].copy()

    def popular(
        self,
        k: int = 10,
        *,
        exclude: Iterable[str] = (),
        filter_categories: Iterable[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Most interacted-with items in the training data (the cold-start fallback)."""
        allowed = self._candidate_mask(self._exclude_rows(exclude), filter_categories)
        return self._popular(k, allowed)

    def item_scores(self, vector: np.ndarray) -> np.ndarray:
        """Every item's score for one user vector (float32, a new array the caller may edit)."""
        out: np.ndarray = np.asarray(self._y @ vector, dtype=np.float32)
        return out

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of every item for a batch of user vectors (m × n_items)."""
        out: np.ndarray = np.asarray(vectors, dtype=np.float32) @ self._y.T
        return out

    # ------------------------------------------------------------ similar, explain
    def similar_items(
        self, item_id: str, k: int = 10, *, filter_categories: Iterable[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """Items closest to ``item_id`` by cosine of factors (the item itself excluded).

        Cold items (no interactions at training time) use genre similarity instead, since
        their vector is only a genre average.
        """
        row = self.item_row(item_id)
        if k <= 0:
            raise InvalidArgumentError(f"k must be positive, got {k}")
        allowed = self._candidate_mask([row], filter_categories)
        if self.cold_items[row]:
            rows, sims = self._genres.similar(row, self.n_items, self.item_popularity)
            keep = allowed[rows]
            rows, sims = rows[keep][:k], sims[keep][:k]
            return [self.item_ids[int(r)] for r in rows], sims.astype(np.float32)
        y = self._y
        sims = np.asarray(y @ y[row], dtype=np.float32) / (self._item_norms * self._item_norms[row])
        sims[~allowed] = -np.inf
        best = top_k(sims, k)
        return [self.item_ids[int(r)] for r in best], sims[best]

    def explain(self, user_items: Mapping[str, float], item_id: str, k: int = 10) -> Explanation:
        """Which of ``user_items`` drove the fold-in score of ``item_id``, largest first.

        The contributions sum to the score, which equals the fold-in score of the item.
        """
        target = self.item_row(item_id)
        rows, raw = self._rows(user_items)
        if rows.size == 0:
            return Explanation(0.0, [])
        conf, yu, chol = self._system(rows, raw)
        weighted = scipy.linalg.cho_solve(
            chol, np.asarray(self.item_factors[target], dtype=np.float64), check_finite=False
        )
        contrib = (yu @ weighted) * conf
        order = np.argsort(-contrib, kind="stable")[:k]
        return Explanation(
            float(contrib.sum()),
            [(self.item_ids[int(rows[j])], float(contrib[j])) for j in order],
        )

    # ---------------------------------------------------------------- persistence
    def to_artifact(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, json files) for :func:`artifact.publish`."""
        arrays: dict[str, np.ndarray] = {
            "item_factors": np.asarray(self.item_factors, dtype=np.float32),
            "user_factors": np.asarray(self.user_factors, dtype=np.float32),
            "item_popularity": self.item_popularity,
            "item_norm": self.weighting.item_norm,
            "cold_items": self.cold_items,
        }
        if self._history is not None:
            indptr, indices, data = self._history
            arrays["user_items_indptr"] = np.asarray(indptr, dtype=np.int64)
            arrays["user_items_indices"] = np.asarray(indices, dtype=np.int32)
            arrays["user_items_data"] = np.asarray(data, dtype=np.float32)
        config = dict(self.config)
        config["regularization"] = self.regularization
        config["weighting"] = self.weighting.config.to_dict()
        json_files: dict[str, Any] = {
            "item_ids": self.item_ids,
            "user_ids": self.user_ids,
            "items": {i: m.to_dict() for i, m in self.items.items()},
            "config": config,
            "metrics": self.metrics,
        }
        return arrays, json_files

    def save(
        self,
        store: str | os.PathLike[str],
        *,
        make_current: bool = True,
        index_min_items: int = ann.DEFAULT_MIN_ITEMS,
    ) -> str:
        """Publish this model as a new version in ``store``; returns the version id.

        A catalog of ``index_min_items`` items or more gets the ANN index (ann.py) built
        now, at training time, so no server builds one on load."""
        arrays, json_files = self.to_artifact()
        files = {}
        if self.n_items >= index_min_items:
            y = self._y
            files[ann.INDEX_FILE] = lambda path: ann.build(y, path)
        path = artifact.publish(
            store,
            arrays=arrays,
            json_files=json_files,
            version=self.version if artifact.is_version_id(self.version) else None,
            make_current=make_current,
            files=files,
        )
        return path.name

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expansion: int = 200) -> Model:
        """Load a version directory or a store's current version; factors are memory-mapped,
        and so is the ANN index when the version has one (``expansion``: its search beam)."""
        reader = artifact.ArtifactReader(path)
        config = reader.json("config")
        history = None
        if reader.has_array("user_items_indptr"):
            history = (
                reader.array("user_items_indptr"),
                reader.array("user_items_indices"),
                reader.array("user_items_data"),
            )
        item_factors = reader.array("item_factors")
        weighting = Weighting(
            WeightingConfig.from_dict(config.get("weighting", {})),
            reader.array("item_norm"),
            int(item_factors.shape[0]),
        )
        items = {
            item_id: ItemMeta(
                item_id, meta.get("title", ""), meta.get("year"), tuple(meta.get("genres", ()))
            )
            for item_id, meta in reader.json("items", {}).items()
        }
        model = cls(
            version=reader.version,
            item_ids=reader.json("item_ids"),
            user_ids=reader.json("user_ids"),
            item_factors=item_factors,
            user_factors=reader.array("user_factors"),
            regularization=float(config["regularization"]),
            weighting=weighting,
            item_popularity=reader.array("item_popularity"),
            cold_items=reader.array("cold_items"),
            history=history,
            items=items,
            config=config,
            metrics=reader.json("metrics", {}),
        )
        index_path = reader.file(ann.INDEX_FILE)
        if index_path is not None:
            model.index = ann.ItemIndex(index_path, item_factors, expansion)
        return model
