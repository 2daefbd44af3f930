"""The ``replay`` protocol: next-item hit rate with the real-time layer switched on.

Train on the first half of the global timeline, then replay the second half in time order:
before applying each event, recommend top-10 for its user and count a hit if the event's item
is in the list. Unlike the offline protocols this scores what the service does per request
(fold-in of every event so far, the trending prior), which a static split cannot see.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from services.recommender.evaluation.data import EventLog, time_split
from services.recommender.evaluation.metrics import K, Recommender
from services.recommender.evaluation.recommenders import ALSRec
from services.recommender.evaluation.results import ProtocolResult
from services.recommender.evaluation.search import SearchResult, als_factory, grid, search
from services.recommender.model import Model, recency_weighted, top_k
from services.recommender.training import TrainConfig, UserItemMatrix, train

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

        found = search("als", als_factory(base, log_), grid(REPLAY_GRID), score, "hr@10")
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
