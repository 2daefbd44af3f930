"""Offline evaluation: three protocols, ranking metrics, baselines and a validation search.

Protocols (documented with results in docs/evaluation.md):

``random``
    A seeded random 80/20 split of all ratings; every held-out rating is a positive. This is
    the setting of the published MovieLens-100K tables (MF P@10 0.366), so numbers compare.
    With ``folds=K`` the ratings are cut into K disjoint random test parts (K-fold
    cross-validation; K=5 is the published tables' u1..u5 setting) and the metrics are the
    mean over folds: one split's sampling noise is as large as the gaps we care about.
``temporal``
    Per user, the last 20% of their events (by time) are held out; held-out ratings ≥ 4 are
    positives. Closer to deployment: the model predicts each user's *future*.
``replay``
    Train on the first half of the global timeline, then replay the second half in time order:
    before applying each event, recommend top-10 for its user and count a hit if the event's
    item is in the list (next-item HR@10). Compares popularity, the static model, and the model
    with every event seen so far folded into the user's vector (what the service does online).

Hyperparameters are always chosen on a *validation split carved out of the training part*
with the same protocol (never on the test split); the chosen values are then refit on the whole
training part and scored once on the test part.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from services.recommender.model import ItemMeta, Model, recency_weighted, top_k
from services.recommender.training import TrainConfig, UserItemMatrix, train

log = logging.getLogger(__name__)

K = 10
PROTOCOLS = ("random", "temporal", "replay")
METRIC_KEYS = ("p@10", "r@10", "ndcg@10", "hr@10", "map@10", "coverage", "mean_pop")


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class EventLog:
    """Interactions as row indices into fixed user/item id lists, in time order."""

    users: np.ndarray  # int64 rows
    items: np.ndarray  # int64 rows
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64
    user_ids: list[str]
    item_ids: list[str]
    item_meta: dict[str, ItemMeta]

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def matrix(self, idx: np.ndarray, *, min_rating: float | None = None) -> sp.csr_matrix:
        """Users × items matrix of the ratings at ``idx`` (optionally only those ≥ min_rating)."""
        idx = np.asarray(idx)
        if min_rating is not None:
            idx = idx[self.ratings[idx] >= min_rating]
        m = sp.csr_matrix(
            (self.ratings[idx], (self.users[idx], self.items[idx])),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        m.sort_indices()
        return m


def _id_sort_key(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def event_log_from_movielens(ml: Any) -> EventLog:
    """From ``recsys_tools.data.movielens.MovieLens``; the catalogue is every item with metadata."""
    inter = ml.interactions
    order = np.lexsort((np.arange(len(inter)), inter.timestamps))  # stable time order
    user_ids = sorted({str(u) for u in inter.user_ids} | set(ml.users), key=_id_sort_key)
    item_ids = sorted({str(i) for i in inter.item_ids} | set(ml.items), key=_id_sort_key)
    upos = {u: r for r, u in enumerate(user_ids)}
    ipos = {i: r for r, i in enumerate(item_ids)}
    meta = {
        item_id: ItemMeta(item_id, info.title, info.year, tuple(info.genres))
        for item_id, info in ml.items.items()
    }
    return EventLog(
        users=np.array([upos[str(u)] for u in inter.user_ids[order]], dtype=np.int64),
        items=np.array([ipos[str(i)] for i in inter.item_ids[order]], dtype=np.int64),
        ratings=np.asarray(inter.ratings[order], dtype=np.float32),
        timestamps=np.asarray(inter.timestamps[order], dtype=np.int64),
        user_ids=user_ids,
        item_ids=item_ids,
        item_meta=meta,
    )


# ------------------------------------------------------------------------- splits
def random_split(idx: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random split of the events ``idx`` (sorted outputs keep time order)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(idx))
    n_test = round(len(perm) * test_frac)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def kfold_parts(idx: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint random parts of the events ``idx`` covering each once (sorted).

    The permutation is the one :func:`random_split` draws for the same seed, so with 5 folds
    of a length divisible by 5 the first part is exactly the single 80/20 split's test set.
    """
    if folds < 1:
        raise ConfigError(f"folds must be at least 1, not {folds}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(idx))
    return [np.sort(part) for part in np.array_split(perm, folds)]


def temporal_user_split(
    log_: EventLog, idx: np.ndarray, test_frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the last ``test_frac`` of their events in ``idx`` (time order) → test.

    ``idx`` must be in time order (event-log order is). A user with a single event keeps it
    in training; otherwise at least one event goes to test.
    """
    idx = np.sort(np.asarray(idx))
    users = log_.users[idx]
    order = np.argsort(users, kind="stable")  # events grouped per user, time order inside
    counts = np.bincount(users, minlength=log_.n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.empty(len(idx), dtype=np.int64)
    pos[order] = np.arange(len(idx)) - np.repeat(starts, counts)
    n_user = counts[users]
    n_test = np.where(n_user > 1, np.maximum(1, np.floor(n_user * test_frac + 1e-9)), 0)
    is_test = pos >= n_user - n_test
    return idx[~is_test], idx[is_test]


def time_split(idx: np.ndarray, first_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """The first ``first_frac`` of the events ``idx`` (time order) and the rest."""
    idx = np.sort(np.asarray(idx))
    cut = round(len(idx) * first_frac)
    return idx[:cut], idx[cut:]


# ------------------------------------------------------------------------ metrics
def ranking_metrics(
    recs: np.ndarray, relevant: sp.csr_matrix, users: np.ndarray, k: int = K
) -> dict[str, float]:
    """Mean P/R/NDCG/HR/MAP@k over ``users``; ``recs[j]`` is user ``users[j]``'s list
    (item rows, −1 padding). ``relevant`` is a users × items matrix of test positives."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict.fromkeys(("p", "r", "ndcg", "hr", "map"), 0.0)
    for j, u in enumerate(users):
        rel = relevant.indices[relevant.indptr[u] : relevant.indptr[u + 1]]
        n_rel = len(rel)
        if n_rel == 0:
            continue
        hits = np.isin(recs[j, :k], rel) & (recs[j, :k] >= 0)
        n_hits = int(hits.sum())
        sums["p"] += n_hits / k
        sums["r"] += n_hits / n_rel
        sums["hr"] += float(n_hits > 0)
        idcg = discounts[: min(n_rel, k)].sum()
        sums["ndcg"] += float((hits * discounts[: len(hits)]).sum() / idcg)
        if n_hits:
            precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            sums["map"] += float((precision_at * hits).sum() / min(n_rel, k))
    n = max(len(users), 1)
    return {
        "p@10": sums["p"] / n,
        "r@10": sums["r"] / n,
        "ndcg@10": sums["ndcg"] / n,
        "hr@10": sums["hr"] / n,
        "map@10": sums["map"] / n,
    }


def list_metrics(recs: np.ndarray, popularity: np.ndarray) -> dict[str, float]:
    """Catalogue coverage (share of items in any list) and mean training popularity
    (users per item) of the recommended items: low coverage + high popularity = blockbusters."""
    flat = recs[recs >= 0]
    n_items = len(popularity)
    return {
        "coverage": len(np.unique(flat)) / n_items if n_items else 0.0,
        "mean_pop": float(popularity[flat].mean()) if flat.size else 0.0,
    }


def batch_top_k(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """Row-wise top-k of ``scores`` (m × n) excluding ``seen`` (m × n); −1 pads short rows."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    scores[rows, seen.indices] = -np.inf
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    out[:, :kk] = np.where(np.isfinite(best_scores), best, -1)
    return out


# -------------------------------------------------------------------- recommenders
class Recommender(Protocol):
    name: str

    def fit(self, train_m: sp.csr_matrix) -> None: ...

    def scores(self, users: np.ndarray) -> np.ndarray: ...


class PopularityRec:
    """Items by number of training users (the non-personalised baseline)."""

    name = "popularity"

    def __init__(self) -> None:
        self.pop = np.zeros(0, dtype=np.float32)

    def fit(self, train_m: sp.csr_matrix) -> None:
        self.pop = np.diff(train_m.tocsc().indptr).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.pop, (len(users), len(self.pop)))


class ItemKNNRec:
    """implicit's item-item cosine neighbourhood model (``K`` neighbours per item)."""

    name = "itemknn"

    def __init__(self, k_neighbours: int = 100, binary: bool = False) -> None:
        self.k_neighbours = k_neighbours
        self.binary = binary
        self.sim: sp.csr_matrix | None = None
        self.train_m: sp.csr_matrix | None = None

    def fit(self, train_m: sp.csr_matrix) -> None:
        from implicit.nearest_neighbours import CosineRecommender

        m = train_m.copy()
        if self.binary:
            m.data[:] = 1.0
        rec = CosineRecommender(K=self.k_neighbours, num_threads=2)
        rec.fit(m, show_progress=False)
        self.sim = rec.similarity.tocsr()
        self.train_m = m

    def scores(self, users: np.ndarray) -> np.ndarray:
        assert self.sim is not None and self.train_m is not None
        out: np.ndarray = np.asarray((self.train_m[users] @ self.sim).todense(), dtype=np.float32)
        return out


class BPRRec:
    """implicit's Bayesian Personalised Ranking (pairwise SGD on sampled negatives)."""

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = 42,
    ) -> None:
        self.params = {
            "factors": factors,
            "learning_rate": learning_rate,
            "regularization": regularization,
            "iterations": iterations,
        }
        self.seed = seed
        self.user_factors = np.zeros((0, 0), dtype=np.float32)
        self.item_factors = np.zeros((0, 0), dtype=np.float32)

    def fit(self, train_m: sp.csr_matrix) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            bpr = BayesianPersonalizedRanking(**self.params, num_threads=2, random_state=self.seed)
            bpr.fit(train_m, show_progress=False)
        self.user_factors = np.asarray(bpr.user_factors)
        self.item_factors = np.asarray(bpr.item_factors)

    def scores(self, users: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.user_factors[users] @ self.item_factors.T
        return out


def recency_boosted(
    log_: EventLog, m: sp.csr_matrix, boost: float, half_life: float
) -> sp.csr_matrix:
    """``m`` with each user's entries multiplied by ``1 + boost · 2^(−j / half_life)``, ``j``
    the entry's rank among that user's entries by (latest) event time, 0 = newest: the same
    recency weighting as :func:`model.recency_weighted`, applied at training time."""
    m = sp.csr_matrix(m, copy=True)
    m.sort_indices()
    if boost <= 0 or m.nnz == 0:
        return m
    key = log_.users * log_.n_items + log_.items
    last = np.zeros(log_.n_users * log_.n_items, dtype=np.int64)
    last[key] = log_.timestamps  # event-log order is time order: the latest event wins
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    times = last[rows * log_.n_items + m.indices]
    order = np.lexsort((-times, rows))  # per row, newest first
    rank = np.empty(m.nnz, dtype=np.int64)
    rank[order] = np.arange(m.nnz) - np.repeat(m.indptr[:-1], np.diff(m.indptr))
    m.data = (m.data * (1.0 + boost * 0.5 ** (rank / half_life))).astype(np.float32)
    return m


class ALSRec:
    """Our training path (weighting + implicit ALS + :class:`Model`), scored like serving.

    ``recency`` = (boost, half-life in events) re-weights each user's training entries by
    recency (:func:`recency_boosted`) before the weighting; None = off."""

    name = "als"

    def __init__(
        self, config: TrainConfig, log_: EventLog, recency: tuple[float, float] | None = None
    ) -> None:
        self.config = config
        self.log = log_
        self.recency = recency
        self.model: Model | None = None

    def fit(self, train_m: sp.csr_matrix) -> None:
        if self.recency is not None and self.recency[0] > 0:
            train_m = recency_boosted(self.log, train_m, *self.recency)
        data = UserItemMatrix(train_m, self.log.user_ids, self.log.item_ids)
        self.model = train(data, self.config, items=self.log.item_meta, keep_history=False)

    def scores(self, users: np.ndarray) -> np.ndarray:
        assert self.model is not None
        vectors = np.zeros((len(users), self.model.n_factors), dtype=np.float32)
        for j, u in enumerate(users):  # users without training events stay at zero
            row = self.model.user_row(self.log.user_ids[u])
            if row is not None:
                vectors[j] = self.model.user_factors[row]
        return self.model.score_vectors(vectors)


def evaluate(
    rec: Recommender,
    train_m: sp.csr_matrix,
    test_pos: sp.csr_matrix,
    k: int = K,
    *,
    popularity: np.ndarray | None = None,
) -> dict[str, float]:
    """Fit on ``train_m`` and score every user with a test positive. Users with no training
    events get the popularity list from every model (none can do better for them)."""
    rec.fit(train_m)
    pop = popularity if popularity is not None else np.diff(train_m.tocsc().indptr)
    users = np.flatnonzero(np.diff(test_pos.indptr) > 0)
    recs = np.empty((len(users), k), dtype=np.int64)
    cold_users = np.diff(train_m.indptr)[users] == 0
    for lo in range(0, len(users), 1024):
        chunk = users[lo : lo + 1024]
        recs[lo : lo + len(chunk)] = batch_top_k(rec.scores(chunk), train_m[chunk], k)
    if cold_users.any():
        pop_list = top_k(np.asarray(pop, dtype=np.float32), k)
        recs[cold_users] = pop_list
    out = ranking_metrics(recs, test_pos, users, k)
    out.update(list_metrics(recs, np.asarray(pop, dtype=np.float32)))
    return out


# --------------------------------------------------------------------- search grids
ALS_GRID: dict[str, list[Any]] = {
    "scheme": ["none", "log", "bm25"],
    "alpha": [1.0, 5.0, 20.0],
    "regularization": [1.0, 10.0, 50.0, 100.0],
    "factors": [64, 128],
}
# Temporal protocol: positives are ratings >= 4 and the target is each user's *next* films, so
# the grid adds the rating offset (weak confidence for 1-3 stars) and training-time recency.
ALS_TEMPORAL_GRID: dict[str, list[Any]] = {
    "scheme": ["none", "log"],
    "alpha": [1.0, 3.0],
    "regularization": [5.0, 10.0, 30.0],
    "factors": [64],
    "offset": [0.0, 3.0],
    "recency_boost": [0.0, 3.0],
    "recency_half_life": [20.0],
}
ITEMKNN_GRID: dict[str, list[Any]] = {"k_neighbours": [20, 50, 100, 200], "binary": [False, True]}
BPR_GRID: dict[str, list[Any]] = {
    "factors": [64, 128],
    "learning_rate": [0.01, 0.05],
    "regularization": [0.01, 0.001],
    "iterations": [100],
}


def grid(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(space)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(space[k] for k in keys))
    ]


@dataclass
class SearchResult:
    name: str
    best: dict[str, Any]
    table: list[dict[str, Any]]  # params + validation metric per configuration


def search(
    name: str,
    factory: Callable[[dict[str, Any]], Recommender],
    candidates: Iterable[dict[str, Any]],
    score: Callable[[Recommender], float],
    metric: str,
) -> SearchResult:
    """Try each configuration, keep the best validation ``metric`` (first wins ties)."""
    table: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_value = -math.inf
    for params in candidates:
        started = time.perf_counter()
        value = score(factory(params))
        table.append({**params, metric: value, "seconds": time.perf_counter() - started})
        log.info("%s %s -> %s=%.4f", name, params, metric, value)
        if value > best_value:
            best, best_value = params, value
    assert best is not None, "empty search grid"
    return SearchResult(name, best, table)


def _als_factory(base: TrainConfig, log_: EventLog) -> Callable[[dict[str, Any]], Recommender]:
    def make(params: dict[str, Any]) -> Recommender:
        params = dict(params)
        boost = float(params.pop("recency_boost", 0.0))
        half_life = float(params.pop("recency_half_life", 20.0))
        recency = (boost, half_life) if boost > 0 else None
        return ALSRec(base.with_params(**params), log_, recency)

    return make


def _factories(
    log_: EventLog, base: TrainConfig, protocol: str = "random"
) -> dict[str, tuple[Callable[[dict[str, Any]], Recommender], list[dict[str, Any]]]]:
    als_grid = ALS_TEMPORAL_GRID if protocol == "temporal" else ALS_GRID
    return {
        "popularity": (lambda p: PopularityRec(), [{}]),
        "itemknn": (lambda p: ItemKNNRec(**p), grid(ITEMKNN_GRID)),
        "bpr": (lambda p: BPRRec(**p), grid(BPR_GRID)),
        "als": (_als_factory(base, log_), grid(als_grid)),
    }


# ----------------------------------------------------------------- offline protocols
def _rounded(models: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {name: {k: round(v, 4) for k, v in metrics.items()} for name, metrics in models.items()}


@dataclass
class ProtocolResult:
    """One protocol's test metrics. For K-fold cross-validation (``folds`` > 1) ``models`` is
    the mean over folds, ``std`` the sample standard deviation across folds and ``fold_results``
    each fold's own result (its searches, chosen parameters and test metrics)."""

    protocol: str
    models: dict[str, dict[str, float]]
    searches: list[SearchResult]
    details: dict[str, Any]
    folds: int = 1
    std: dict[str, dict[str, float]] = field(default_factory=dict)
    fold_results: list[ProtocolResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON line; a single split keeps its original shape, K folds add ``folds``,
        ``std`` and ``per_fold`` next to the (mean) ``models``."""
        out: dict[str, Any] = {"protocol": self.protocol, "models": _rounded(self.models)}
        if self.folds > 1:
            out["folds"] = self.folds
            out["std"] = _rounded(self.std)
            out["per_fold"] = [
                {"models": _rounded(r.models), "chosen": r.details.get("chosen", {})}
                for r in self.fold_results
            ]
        return out


def combine_folds(results: Sequence[ProtocolResult]) -> ProtocolResult:
    """Mean and sample standard deviation (ddof 1) of every model's metrics over the folds."""
    if not results:
        raise ValueError("no fold results to combine")
    first = results[0]
    means: dict[str, dict[str, float]] = {}
    stds: dict[str, dict[str, float]] = {}
    for name, metrics in first.models.items():
        means[name], stds[name] = {}, {}
        for key in metrics:
            values = np.array([r.models[name][key] for r in results], dtype=np.float64)
            means[name][key] = float(values.mean())
            stds[name][key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    details: dict[str, Any] = {"folds": len(results)}
    for key in first.details:
        details[key] = [r.details[key] for r in results]
    return ProtocolResult(
        first.protocol,
        means,
        [s for r in results for s in r.searches],
        details,
        folds=len(results),
        std=stds,
        fold_results=list(results),
    )


def _split_for(
    protocol: str, log_: EventLog, idx: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, float | None]:
    if protocol == "random":
        tr, te = random_split(idx, 0.2, seed)
        return tr, te, None
    tr, te = temporal_user_split(log_, idx, 0.2)
    return tr, te, 4.0


def offline_splits(
    protocol: str, log_: EventLog, seed: int, folds: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) event indices per fold. One fold is the protocol's single 80/20 split;
    K > 1 folds (random protocol only) test on each of :func:`kfold_parts`' K parts in turn
    and train on the other K − 1."""
    everything = np.arange(len(log_))
    if folds == 1:
        train_idx, test_idx, _ = _split_for(protocol, log_, everything, seed)
        return [(train_idx, test_idx)]
    if protocol != "random":
        raise ConfigError(f"--folds > 1 is only defined for the random protocol, not {protocol!r}")
    parts = kfold_parts(everything, folds, seed)
    return [(np.sort(np.concatenate(parts[:f] + parts[f + 1 :])), parts[f]) for f in range(folds)]


def run_offline(
    protocol: str,
    log_: EventLog,
    *,
    base: TrainConfig | None = None,
    tune: bool = True,
    fixed: Mapping[str, dict[str, Any]] | None = None,
    seed: int = 42,
    models: Sequence[str] = ("popularity", "itemknn", "bpr", "als"),
    folds: int = 1,
    on_fold: Callable[[int, int, ProtocolResult], None] | None = None,
) -> ProtocolResult:
    """Protocol ``random`` or ``temporal``: search on a validation split of the training part,
    refit the best configuration on the whole training part, score once on test.

    ``folds`` > 1 (random only) does all of that once per fold — the search too, since a
    validation split of one fold's training part holds other folds' test ratings — and
    returns the mean over folds (:func:`combine_folds`). ``on_fold(f, folds, result)`` is
    called as each fold finishes (progress for a long run)."""
    if protocol not in ("random", "temporal"):
        raise ValueError(f"offline protocol must be random or temporal, not {protocol!r}")
    if folds < 1:
        raise ConfigError(f"folds must be at least 1, not {folds}")
    base = base or TrainConfig()
    results: list[ProtocolResult] = []
    splits = offline_splits(protocol, log_, seed, folds)
    for f, (train_idx, test_idx) in enumerate(splits):
        result = _run_split(protocol, log_, train_idx, test_idx, base, tune, fixed, seed, models)
        if on_fold is not None:
            on_fold(f, len(splits), result)
        results.append(result)
    return results[0] if folds == 1 else combine_folds(results)


def _run_split(
    protocol: str,
    log_: EventLog,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    base: TrainConfig,
    tune: bool,
    fixed: Mapping[str, dict[str, Any]] | None,
    seed: int,
    models: Sequence[str],
) -> ProtocolResult:
    """One train/test split: validation carved from ``train_idx`` only, then refit and test."""
    min_rating = None if protocol == "random" else 4.0
    fit_idx, val_idx, _ = _split_for(protocol, log_, train_idx, seed + 1)
    train_m, fit_m = log_.matrix(train_idx), log_.matrix(fit_idx)
    test_pos = log_.matrix(test_idx, min_rating=min_rating)
    val_pos = log_.matrix(val_idx, min_rating=min_rating)
    factories = _factories(log_, base, protocol)
    results: dict[str, dict[str, float]] = {}
    searches: list[SearchResult] = []
    for name in models:
        factory, candidates = factories[name]
        if fixed and name in fixed:
            candidates = [dict(fixed[name])]
        if tune and len(candidates) > 1:
            found = search(
                name,
                factory,
                candidates,
                lambda rec: evaluate(rec, fit_m, val_pos)["ndcg@10"],
                "ndcg@10",
            )
            searches.append(found)
            params = found.best
        else:
            params = candidates[0]
        started = time.perf_counter()
        metrics = evaluate(factory(params), train_m, test_pos)
        log.info("%s test %s in %.1fs", name, metrics, time.perf_counter() - started)
        results[name] = metrics
    details = {
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "n_test_users": int((np.diff(test_pos.indptr) > 0).sum()),
        "n_validation_fit": len(fit_idx),
        "n_validation": len(val_idx),
        "chosen": {s.name: s.best for s in searches},
    }
    return ProtocolResult(protocol, results, searches, details)


# ------------------------------------------------------------------------ replay
REPLAY_GRID: dict[str, list[Any]] = {
    "scheme": ["none", "log"],
    "alpha": [1.0],
    "regularization": [3.0, 10.0],
    "factors": [64, 128],
}


@dataclass(frozen=True)
class RealtimeConfig:
    """The real-time layer on top of the trained factors (what the service can do per request).

    ``recency_boost``/``recency_half_life`` (in events): :func:`model.recency_weighted` of the
    user's events before fold-in. ``trending_half_life_s``: exponential decay of the live
    trending counts (the events service keeps the same list, ``TRENDING_HALF_LIFE_S``).
    ``prior_weight``: the blend of :meth:`Model.recommend` with that list as ``prior``.
    Defaults: the replay protocol's validation choice (docs/evaluation.md).
    """

    recency_boost: float = 20.0
    recency_half_life: float = 10.0
    trending_half_life_s: float = 7 * 86400.0
    prior_weight: float = 0.5


REALTIME_GRID: dict[str, list[Any]] = {
    "recency_boost": [0.0, 20.0],
    "recency_half_life": [10.0],
    "trending_half_life_s": [7 * 86400.0, 30 * 86400.0],
    "prior_weight": [0.0, 0.3, 0.5],
}

REPLAY_VARIANTS = (
    "popularity",
    "popularity_live",
    "trending",
    "als_static",
    "als_foldin_plain",
    "als_foldin",
)


class _Trending:
    """Counts decayed by event time with a half-life: the live trending list."""

    def __init__(self, n_items: int, half_life_s: float) -> None:
        self.counts = np.zeros(n_items, dtype=np.float64)
        self.half_life_s = half_life_s
        self.t: int | None = None

    def advance(self, t: int) -> None:
        if self.t is not None and t > self.t:
            self.counts *= 0.5 ** ((t - self.t) / self.half_life_s)
        self.t = t if self.t is None else max(self.t, t)

    def add(self, item: int, t: int) -> None:
        self.advance(t)
        self.counts[item] += 1.0


def replay(
    log_: EventLog,
    train_idx: np.ndarray,
    replay_idx: np.ndarray,
    config: TrainConfig,
    *,
    realtime: RealtimeConfig | None = None,
    k: int = K,
    variants: Sequence[str] = REPLAY_VARIANTS,
    model: Model | None = None,
) -> dict[str, dict[str, float]]:
    """Next-item HR@k over ``replay_idx`` (time order) for a model trained on ``train_idx``.

    Every variant excludes what the user has already seen (training history plus the events
    replayed so far), as the service's seen-filter would. ``popularity``: training counts
    (static); ``popularity_live``: training plus replayed counts so far; ``trending``: the
    time-decayed counts of every event so far; ``als_static``: the trained user vector
    (training popularity for users unseen in training), nothing live; ``als_foldin_plain``:
    the user's whole history folded in before each recommendation, nothing else;
    ``als_foldin``: the real-time model — recency-weighted fold-in blended with the trending
    list, the trending list for users with no events yet (:class:`RealtimeConfig`).
    """
    rt = realtime or RealtimeConfig()
    train_m = log_.matrix(train_idx)
    if model is None:
        model = train(
            UserItemMatrix(train_m, log_.user_ids, log_.item_ids), config, items=log_.item_meta
        )
    counts = np.diff(train_m.tocsc().indptr).astype(np.float64)
    static_counts = counts.copy()
    trending = _Trending(log_.n_items, rt.trending_half_life_s)
    for e in np.sort(np.asarray(train_idx)):
        trending.add(int(log_.items[e]), int(log_.timestamps[e]))
    hits = dict.fromkeys(variants, 0)
    rec_items: dict[str, set[int]] = {v: set() for v in variants}
    events: dict[int, list[tuple[str, float]]] = {}  # per user, oldest first
    for e in np.sort(np.asarray(train_idx)):
        u = int(log_.users[e])
        events.setdefault(u, []).append((log_.item_ids[int(log_.items[e])], float(log_.ratings[e])))
    replayed: dict[int, dict[str, float]] = {}
    for e in np.sort(np.asarray(replay_idx)):
        u, i, t = int(log_.users[e]), int(log_.items[e]), int(log_.timestamps[e])
        user_id, item_id = log_.user_ids[u], log_.item_ids[i]
        trending.advance(t)
        new = replayed.setdefault(u, {})
        history = model.user_history(user_id)
        seq = events.setdefault(u, [])
        for variant in variants:
            if variant in ("popularity", "popularity_live", "trending"):
                seen = [model.item_row(x) for x in itertools.chain(history, new)]
                base_scores = {
                    "popularity": static_counts,
                    "popularity_live": counts,
                    "trending": trending.counts,
                }[variant]
                scores = base_scores + 1e-9 * static_counts  # ties: training popularity
                scores[seen] = -np.inf
                ids = [model.item_ids[int(r)] for r in top_k(scores, k)]
            elif variant == "als_static":
                ids = model.recommend(user_id, None, k, exclude=new, with_reasons=False).ids
            elif variant == "als_foldin_plain":
                merged = recency_weighted(seq)
                ids = model.recommend(user_id, merged, k, with_reasons=False).ids
            else:
                weights = recency_weighted(
                    seq, boost=rt.recency_boost, half_life=rt.recency_half_life
                )
                ids = model.recommend(
                    user_id,
                    weights,
                    k,
                    with_reasons=False,
                    prior=trending.counts if rt.prior_weight > 0 or not seq else None,
                    prior_weight=rt.prior_weight,
                ).ids
            hits[variant] += item_id in ids
            rec_items[variant].update(model.item_row(x) for x in ids)
        rating = float(log_.ratings[e])
        new[item_id] = new.get(item_id, 0.0) + rating
        seq.append((item_id, rating))
        counts[i] += 1
        trending.add(i, t)
    n = max(len(replay_idx), 1)
    return {
        v: {"hr@10": hits[v] / n, "coverage": len(rec_items[v]) / log_.n_items} for v in variants
    }


def run_replay(
    log_: EventLog,
    *,
    base: TrainConfig | None = None,
    tune: bool = True,
    fixed: Mapping[str, Any] | None = None,
    realtime: RealtimeConfig | None = None,
) -> ProtocolResult:
    """Protocol ``replay``. The search replays the last 20% of the training half with a model
    fitted on its first 80%, choosing by the real-time fold-in HR@10 in two stages: the ALS
    grid with the default :class:`RealtimeConfig`, then the real-time grid on the chosen ALS."""
    base = base or TrainConfig()
    rt = realtime or RealtimeConfig()
    train_idx, test_idx = time_split(np.arange(len(log_)), 0.5)
    searches: list[SearchResult] = []
    if fixed:
        config = base.with_params(**fixed)
    elif tune:
        fit_idx, val_idx = time_split(train_idx, 0.8)

        def score(rec: Recommender) -> float:
            assert isinstance(rec, ALSRec)
            return replay(
                log_, fit_idx, val_idx, rec.config, realtime=rt, variants=("als_foldin",)
            )["als_foldin"]["hr@10"]

        found = search("als", _als_factory(base, log_), grid(REPLAY_GRID), score, "hr@10")
        searches.append(found)
        config = base.with_params(**found.best)
        val_model = train(
            UserItemMatrix(log_.matrix(fit_idx), log_.user_ids, log_.item_ids),
            config,
            items=log_.item_meta,
        )

        def score_rt(rec: Recommender) -> float:
            assert isinstance(rec, _RealtimeCandidate)
            return replay(
                log_,
                fit_idx,
                val_idx,
                config,
                realtime=rec.realtime,
                variants=("als_foldin",),
                model=val_model,
            )["als_foldin"]["hr@10"]

        found_rt = search(
            "realtime",
            lambda p: _RealtimeCandidate(RealtimeConfig(**p)),
            grid(REALTIME_GRID),
            score_rt,
            "hr@10",
        )
        searches.append(found_rt)
        rt = RealtimeConfig(**found_rt.best)
    else:
        config = base
    models = replay(log_, train_idx, test_idx, config, realtime=rt)
    details = {
        "n_train": len(train_idx),
        "n_replay": len(test_idx),
        "chosen": {"als": config.to_dict(), "realtime": asdict(rt)},
    }
    return ProtocolResult("replay", models, searches, details)


class _RealtimeCandidate:
    """A :class:`RealtimeConfig` wrapped for :func:`search` (nothing to fit: the model is
    shared across the real-time grid)."""

    name = "realtime"

    def __init__(self, realtime: RealtimeConfig) -> None:
        self.realtime = realtime

    def fit(self, train_m: sp.csr_matrix) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    def scores(self, users: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        raise NotImplementedError
