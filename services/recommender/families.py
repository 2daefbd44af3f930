"""Model families the tuner chooses among, each fitted on a users × items matrix of summed
interaction counts and scoring every item for a batch of users.

Why several: on retail-like logs tuning ALS's own hyperparameters gains only a few percent;
item-item models (EASE on the head of the catalogue, RP3beta graph walks, BM25 item-kNN) often
beat any ALS there, and which family wins depends on the log. ``recsys tune`` therefore searches
the family as one more hyperparameter, and a config names its family and parameters
(:class:`FamilyConfig`); ``recsys evaluate --config`` and ``recsys train --config`` build the
model through :func:`build` from the same config, so the figure reported is the model served.

The ALS family goes through the serving path's own weighting and :func:`training.fit_factors`,
so a tuned ALS config is exactly what ``recsys train --config`` publishes. The item-item
families reduce to a sparse or head-dense item × item matrix ``W`` and score ``x_u · W`` with
``x_u`` the user's (transformed) history row, which is what an item-item serving path needs.
Pure numpy/scipy/implicit: no service clients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError

FAMILIES = ("als", "ease", "rp3beta", "item_knn")
# EASE inverts a dense items × items Gram matrix: 8000 items is 256 MB in float32 and a few
# seconds on 2 cores; the tail beyond the head is rarely a target and keeps zero scores.
EASE_MAX_ITEMS = 8000
# Weights each EASE row keeps (by magnitude): bounds the served sparse matrix at
# neighbours × items entries; the pruned weights are the small ones.
EASE_NEIGHBOURS = 1000
ITEM_ITEM = ("ease", "rp3beta", "item_knn")


class Fitted(Protocol):
    def scores(self, users: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FamilyConfig:
    """A family and its hyperparameters: what ``recsys tune`` writes and ``--config`` reads."""

    family: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"model family {self.family!r} must be one of {', '.join(FAMILIES)}")

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FamilyConfig:
        if not isinstance(data, Mapping) or "family" not in data:
            raise ConfigError("a model config is a JSON object with a 'family' and 'params'")
        params = data.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError("a model config's 'params' must be a JSON object")
        return cls(str(data["family"]), dict(params))


def transform_input(m: sp.csr_matrix, scheme: str, power: float = 1.0) -> sp.csr_matrix:
    """An item-item family's history transform, the same in evaluation and serving: raw
    counts, log1p or binary, then raised to ``power`` (RP3beta's alpha)."""
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    if scheme == "log":
        out.data = np.log1p(out.data)
    elif scheme == "binary":
        out.data[:] = 1.0
    elif scheme != "none":
        raise ConfigError(f"input weighting {scheme!r} must be none, log or binary")
    if power != 1.0:
        out.data = np.power(out.data, np.float32(power))
    return out


@dataclass(frozen=True)
class ItemItem:
    """A fitted item-item family: ``score(u) = transform(x_u) · W``, ``W`` items × items
    (sparse; row j holds what history item j adds to every item). What the served
    :class:`item_model.ItemItemModel` stores, so the served model is the evaluated one."""

    w: sp.csr_matrix
    input: str
    power: float
    x: sp.csr_matrix  # the training matrix, transformed

    def scores(self, users: np.ndarray) -> np.ndarray:
        out = self.x[users] @ self.w
        return np.asarray(out.todense(), dtype=np.float32)


def _top_k_rows(w: sp.csr_matrix, k: int, *, by_magnitude: bool = False) -> sp.csr_matrix:
    """Keep each row's ``k`` largest entries (by value, or by magnitude for EASE's signed
    weights): the neighbourhood, which also bounds the served matrix's size."""
    w = sp.csr_matrix(w, dtype=np.float32)
    counts = np.diff(w.indptr)
    if counts.max(initial=0) <= k:
        return w
    keep = np.zeros(w.nnz, dtype=bool)
    for r in np.flatnonzero(counts > 0):
        lo, hi = w.indptr[r], w.indptr[r + 1]
        if hi - lo <= k:
            keep[lo:hi] = True
            continue
        vals = np.abs(w.data[lo:hi]) if by_magnitude else w.data[lo:hi]
        keep[lo + np.argpartition(-vals, k - 1)[:k]] = True
    rows = np.repeat(np.arange(w.shape[0]), counts)
    return sp.csr_matrix(
        (w.data[keep], (rows[keep], w.indices[keep])), shape=w.shape, dtype=np.float32
    )


def fit_ease(m: sp.csr_matrix, params: Mapping[str, Any]) -> ItemItem:
    """EASE (Steck 2019): ``B = I − P·diag(1/diag P)``, ``P = (XᵀX + λI)⁻¹``, on the
    ``max_items`` most popular items; each row keeps its ``neighbours`` largest weights by
    magnitude so the served matrix stays sparse."""
    scheme = str(params.get("input", "binary"))
    x = transform_input(m, scheme)
    lam = float(params.get("lambda", 200.0))
    max_items = int(params.get("max_items", EASE_MAX_ITEMS))
    neighbours = int(params.get("neighbours", EASE_NEIGHBOURS))
    pop = np.diff(x.tocsc().indptr)
    head = np.sort(np.argsort(-pop, kind="stable")[: min(max_items, x.shape[1])])
    xh = x[:, head]
    g = np.asarray((xh.T @ xh).todense(), dtype=np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    bh = _top_k_rows(sp.csr_matrix(b.astype(np.float32)), neighbours, by_magnitude=True)
    coo = bh.tocoo()
    w = sp.csr_matrix(
        (coo.data, (head[coo.row], head[coo.col])), shape=(x.shape[1], x.shape[1]), dtype=np.float32
    )
    return ItemItem(w, scheme, 1.0, x)


def fit_rp3beta(m: sp.csr_matrix, params: Mapping[str, Any]) -> ItemItem:
    """RP3beta (Paudel et al. 2017): a three-step random walk item → user → item with
    transition probabilities raised to ``alpha``, divided by item popularity to the ``beta``,
    keeping ``neighbours`` per item. A user's walk starts from their row normalised; that
    per-user constant does not change their ranking, so scoring uses ``x^alpha`` alone."""
    alpha = float(params.get("alpha", 1.0))
    beta = float(params.get("beta", 0.5))
    k = int(params.get("neighbours", 200))
    scheme = str(params.get("input", "binary"))
    x = transform_input(m, scheme)

    def row_normalised(a: sp.csr_matrix) -> sp.csr_matrix:
        sums = np.asarray(a.sum(axis=1)).ravel()
        sums[sums == 0] = 1.0
        out = sp.csr_matrix(sp.diags(1.0 / sums) @ a, dtype=np.float32)
        out.data = np.power(out.data, np.float32(alpha))
        return out

    p_ui = row_normalised(x)
    p_iu = row_normalised(sp.csr_matrix(x.T))
    w = sp.csr_matrix(p_iu @ p_ui, dtype=np.float32)
    pop = np.diff(x.tocsc().indptr).astype(np.float64)
    pop[pop == 0] = 1.0
    w = sp.csr_matrix(w @ sp.diags(np.power(pop, -beta).astype(np.float32)), dtype=np.float32)
    w.setdiag(0.0)
    w.eliminate_zeros()
    return ItemItem(_top_k_rows(w, k), scheme, alpha, transform_input(m, scheme, alpha))


def fit_item_knn(m: sp.csr_matrix, params: Mapping[str, Any]) -> ItemItem:
    """implicit's BM25-weighted item-kNN (``BM25Recommender``), scoring raw history rows as
    its ``recommend`` does; the baseline uses its defaults (20 neighbours, K1 1.2, B 0.75)."""
    from implicit.nearest_neighbours import BM25Recommender

    x = sp.csr_matrix(m, dtype=np.float32)
    rec = BM25Recommender(
        K=int(params.get("neighbours", 20)),
        K1=float(params.get("k1", 1.2)),
        B=float(params.get("b", 0.75)),
        num_threads=2,
    )
    with warnings.catch_warnings():
        # implicit weights the matrix into COO itself, then warns about its own conversion.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        rec.fit(x, show_progress=False)
    return ItemItem(sp.csr_matrix(rec.similarity, dtype=np.float32), "none", 1.0, x)


class _Factors:
    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        self.user_factors = user_factors
        self.item_factors = item_factors

    def scores(self, users: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.user_factors[users] @ self.item_factors.T
        return out


def als_train_config(params: Mapping[str, Any]) -> Any:
    """The :class:`training.TrainConfig` of an ALS family config: the serving path's own."""
    from services.recommender.training import TrainConfig

    known = {"factors", "regularization", "iterations", "scheme", "alpha", "k1", "b"}
    unknown = set(params) - known - {"random_state"}
    if unknown:
        raise ConfigError(f"unknown ALS parameters: {', '.join(sorted(unknown))}")
    return TrainConfig(random_state=int(params.get("random_state", 0))).with_params(
        **{k: v for k, v in params.items() if k in known}
    )


def fit_als(m: sp.csr_matrix, params: Mapping[str, Any]) -> _Factors:
    from services.recommender.training import fit_factors
    from services.recommender.weights import Weighting

    config = als_train_config(params)
    conf = Weighting.fit(config.weighting, m).transform(m)
    uf, itf = fit_factors(conf, config)
    return _Factors(uf, itf)


def fit_als_untuned(m: sp.csr_matrix) -> _Factors:
    """The issue's reference: implicit ALS, 64 factors, 15 iterations, ``random_state`` 0,
    library defaults otherwise, on log1p of the summed interaction counts."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    conf = sp.csr_matrix(m, dtype=np.float32, copy=True)
    conf.data = np.log1p(conf.data)
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=64, iterations=15, random_state=0, num_threads=2)
        als.fit(conf, show_progress=False)
    return _Factors(np.asarray(als.user_factors), np.asarray(als.item_factors))


class _Popularity:
    def __init__(self, m: sp.csr_matrix) -> None:
        self.pop = np.diff(m.tocsc().indptr).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.pop, (len(users), len(self.pop)))


def fit_popularity(m: sp.csr_matrix) -> _Popularity:
    """Items by number of training users: the non-personalised baseline."""
    return _Popularity(m)


_FITTERS: dict[str, Callable[[sp.csr_matrix, Mapping[str, Any]], Fitted]] = {
    "als": fit_als,
    "ease": fit_ease,
    "rp3beta": fit_rp3beta,
    "item_knn": fit_item_knn,
}


def build(config: FamilyConfig, m: sp.csr_matrix) -> Fitted:
    """Fit ``config``'s family with its parameters on the summed-count matrix ``m``."""
    return _FITTERS[config.family](m, config.params)
