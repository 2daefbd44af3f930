"""The event log every protocol cuts, and the splits that cut it.

Everything here works on rows into one fixed :class:`EventLog`, so a split is just two index
arrays and any matrix built from it has the same user and item axes as every other: metrics
and models from different splits line up without re-mapping ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from services.recommender.model import ItemMeta


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
    """From ``recsys_tools.data.movielens.MovieLens``; the catalogue is every item with metadata.

    Takes the already-loaded data set (typed loosely: the tooling package owns that class, and
    this package must not import it), so loading and downloading stay with the tooling.
    """
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


def protocol_split(
    protocol: str, log_: EventLog, idx: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's 80/20 cut of ``idx``; one function for the test and the validation cut,
    so the search is always tuned on the same kind of split it is scored on."""
    if protocol == "random":
        return random_split(idx, 0.2, seed)
    return temporal_user_split(log_, idx, 0.2)


def offline_splits(
    protocol: str, log_: EventLog, seed: int, folds: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) event indices per fold. One fold is the protocol's single 80/20 split;
    K > 1 folds (random protocol only) test on each of :func:`kfold_parts`' K parts in turn
    and train on the other K − 1."""
    everything = np.arange(len(log_))
    if folds == 1:
        return [protocol_split(protocol, log_, everything, seed)]
    if protocol != "random":
        raise ConfigError(f"--folds > 1 is only defined for the random protocol, not {protocol!r}")
    parts = kfold_parts(everything, folds, seed)
    return [(np.sort(np.concatenate(parts[:f] + parts[f + 1 :])), parts[f]) for f in range(folds)]
