"""Top-k ranking metrics, and :func:`evaluate`, which scores any :class:`Recommender` by them.

Every model is scored by the same batched top-k over the same exclusions (the user's training
items), so a difference between two models' figures is the models', not their plumbing.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from services.recommender.model import top_k

K = 10
METRIC_KEYS = ("p@10", "r@10", "ndcg@10", "hr@10", "map@10", "coverage", "mean_pop")


class Recommender(Protocol):
    """What :func:`evaluate` and the search need from a model: fit on a users × items matrix,
    then score every item for a batch of user rows."""

    name: str

    def fit(self, train_m: sp.csr_matrix) -> None: ...

    def scores(self, users: np.ndarray) -> np.ndarray: ...


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
