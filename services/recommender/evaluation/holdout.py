"""The ``holdout`` and ``timecut`` protocols of ``recsys evaluate --data`` on any interaction log.

Issue 13 fixes the ``holdout`` protocol exactly, so that figures on logs nobody here has seen
compare with ours: per user, interactions sorted by time (ties in file order); the first
⌈0.8·n⌉ of a user's n interactions train, the rest test; targets are test items the user has no
training interaction with and that occur in the training data; evaluated users have ≥ 5
training interactions and ≥ 1 target; items seen in training are excluded from the top 10.
``timecut`` is the same with one global cut: the first 80% of all interactions (time order,
ties in file order) train. The tuner carves its validation split out of the training part with
the same function (:func:`split_part`), so it is tuned on the kind of split it is scored on.

Unlike :mod:`.data` (MovieLens, ratings, a fixed catalogue) a log here is only (user, item,
time, weight) rows in file order; the item axis of every matrix is the items of the training
part, since an item never seen in training can be neither scored nor a target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from services.recommender.evaluation.metrics import K, batch_top_k, ranking_metrics

MIN_TRAIN = 5
HOLDOUT_PROTOCOLS = ("holdout", "timecut")
# Users scored per batch: a dense users × items score block of this many rows bounds memory
# on large catalogues.
SCORE_BATCH = 1024


@dataclass(frozen=True)
class Log:
    """An interaction log in file order: codes into ``user_ids``/``item_ids``, times, weights."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    times: np.ndarray  # float64, Unix seconds
    weights: np.ndarray  # float32, the interaction's count (1 without a weight column)
    user_ids: list[str]
    item_ids: list[str]

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_columns(
        cls,
        users: Sequence[str] | np.ndarray,
        items: Sequence[str] | np.ndarray,
        times: Sequence[float] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> Log:
        u_ids, u = np.unique(np.asarray(users, dtype=str), return_inverse=True)
        i_ids, i = np.unique(np.asarray(items, dtype=str), return_inverse=True)
        t = np.asarray(times, dtype=np.float64)
        w = (
            np.ones(len(u), dtype=np.float32)
            if weights is None
            else np.asarray(weights, dtype=np.float32)
        )
        if not len(u) == len(i) == len(t) == len(w):
            raise DataError("users, items, times and weights differ in length")
        return cls(
            u.astype(np.int64),
            i.astype(np.int64),
            t,
            w,
            [str(x) for x in u_ids],
            [str(x) for x in i_ids],
        )


@dataclass(frozen=True)
class Split:
    """One train/test cut: the training matrix (summed weights, users × training items), the
    targets (users × training items, 1 per target), the evaluated users, and ``train_idx``
    (rows of the log) so the tuner can cut the training part again."""

    train: sp.csr_matrix
    targets: sp.csr_matrix
    users: np.ndarray
    train_idx: np.ndarray
    item_ids: list[str]

    @property
    def n_users(self) -> int:
        return len(self.users)


def _temporal_order(log_: Log, idx: np.ndarray) -> np.ndarray:
    """``idx`` sorted by time, ties in file order (the log's row numbers are file order)."""
    return idx[np.lexsort((idx, log_.times[idx]))]


def train_test_rows(log_: Log, idx: np.ndarray, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``idx`` that train and those that test, by the protocol's rule."""
    idx = _temporal_order(log_, np.asarray(idx, dtype=np.int64))
    if protocol == "timecut":
        cut = (4 * len(idx) + 4) // 5  # ⌈0.8·N⌉
        return idx[:cut], idx[cut:]
    if protocol != "holdout":
        raise ConfigError(f"protocol {protocol!r} must be one of {', '.join(HOLDOUT_PROTOCOLS)}")
    users = log_.users[idx]
    by_user = np.argsort(users, kind="stable")  # time order kept inside each user
    counts = np.bincount(users, minlength=len(log_.user_ids))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.empty(len(idx), dtype=np.int64)
    pos[by_user] = np.arange(len(idx)) - np.repeat(starts, counts)
    # ⌈0.8·n⌉ = ⌈4n/5⌉ in integers, exact for every n.
    n_train = (4 * counts + 4) // 5
    is_train = pos < n_train[users]
    return idx[is_train], idx[~is_train]


def split_part(log_: Log, idx: np.ndarray, protocol: str, *, min_train: int = MIN_TRAIN) -> Split:
    """Cut the log rows ``idx`` by ``protocol`` and build the matrices the models see."""
    train_idx, test_idx = train_test_rows(log_, idx, protocol)
    train_items = np.unique(log_.items[train_idx])
    col = np.full(len(log_.item_ids), -1, dtype=np.int64)
    col[train_items] = np.arange(len(train_items))
    n_users = len(log_.user_ids)
    train = sp.csr_matrix(
        (log_.weights[train_idx], (log_.users[train_idx], col[log_.items[train_idx]])),
        shape=(n_users, len(train_items)),
        dtype=np.float32,
    )
    train.sum_duplicates()
    train.sort_indices()
    test_cols = col[log_.items[test_idx]]
    keep = test_cols >= 0  # targets occur in the training data
    targets = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (log_.users[test_idx][keep], test_cols[keep])),
        shape=train.shape,
        dtype=np.float32,
    )
    targets.sum_duplicates()
    targets.data[:] = 1.0
    # ... that the user has no training interaction with.
    targets = targets - targets.multiply(train > 0)
    targets.eliminate_zeros()
    targets = sp.csr_matrix(targets)
    targets.sort_indices()
    n_train_events = np.bincount(log_.users[train_idx], minlength=n_users)
    users = np.flatnonzero((n_train_events >= min_train) & (np.diff(targets.indptr) > 0))
    return Split(train, targets, users, train_idx, [log_.item_ids[i] for i in train_items])


def split(log_: Log, protocol: str) -> Split:
    """The protocol's cut of the whole log: what ``recsys evaluate --data`` scores on."""
    return split_part(log_, np.arange(len(log_)), protocol)


def validation_split(log_: Log, outer: Split, protocol: str) -> Split:
    """The same rule applied inside ``outer``'s training part: what the tuner scores on."""
    return split_part(log_, outer.train_idx, protocol)


class Scorer(Protocol):
    """A model fitted on a split's training matrix: scores every item for some users."""

    def scores(self, users: np.ndarray) -> np.ndarray: ...


def evaluate_split(
    s: Split, scorer: Scorer, k: int = K, users: np.ndarray | None = None
) -> dict[str, float]:
    """NDCG/HR/recall@k over the split's evaluated users, training items excluded."""
    users = s.users if users is None else users
    recs = np.empty((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), SCORE_BATCH):
        batch = users[lo : lo + SCORE_BATCH]
        recs[lo : lo + len(batch)] = batch_top_k(scorer.scores(batch), s.train[batch], k)
    m = ranking_metrics(recs, s.targets, users, k)
    return {"ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"], "recall@10": m["r@10"]}


def sample_users(users: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """At most ``limit`` of ``users`` (a seeded sample, sorted), to bound a tuning trial."""
    if limit is None or len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False))


def run(
    log_: Log,
    protocol: str,
    models: Mapping[str, Callable[[sp.csr_matrix], Scorer]],
    *,
    on_model: Callable[[str, dict[str, float], float], None] | None = None,
) -> dict[str, object]:
    """Fit each model on the protocol's training part and score it: the JSON line's content."""
    import time

    s = split(log_, protocol)
    if s.n_users == 0:
        raise DataError(
            f"no user has >= {MIN_TRAIN} training interactions and a target under the "
            f"{protocol} protocol: the log is too small or too sparse to evaluate"
        )
    out: dict[str, dict[str, float]] = {}
    for name, fit in models.items():
        started = time.perf_counter()
        out[name] = evaluate_split(s, fit(s.train))
        if on_model is not None:
            on_model(name, out[name], time.perf_counter() - started)
    return {"protocol": protocol, "users": int(s.n_users), "models": out}
