"""The hyperparameter grids and the validation search over them.

The search only ever sees a validation split carved out of a training part (the protocols
decide which); it returns the whole table, not just the winner, so a report can show how
flat or sharp the optimum is.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.recommender.evaluation.data import EventLog
from services.recommender.evaluation.metrics import Recommender
from services.recommender.evaluation.recommenders import ALSRec, BPRRec, ItemKNNRec, PopularityRec
from services.recommender.training import TrainConfig

log = logging.getLogger(__name__)

Factory = Callable[[dict[str, Any]], Recommender]

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
    """Every combination of ``space``'s values, in a fixed order (the first key varies
    slowest), so ties in the search always resolve to the same configuration."""
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
    factory: Factory,
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


def als_factory(base: TrainConfig, log_: EventLog) -> Factory:
    """ALS candidates from grid points: the training-time recency keys are not
    :class:`TrainConfig` fields, so they are taken off here and handed to :class:`ALSRec`."""

    def make(params: dict[str, Any]) -> Recommender:
        params = dict(params)
        boost = float(params.pop("recency_boost", 0.0))
        half_life = float(params.pop("recency_half_life", 20.0))
        recency = (boost, half_life) if boost > 0 else None
        return ALSRec(base.with_params(**params), log_, recency)

    return make


def model_factories(
    log_: EventLog, base: TrainConfig, protocol: str = "random"
) -> dict[str, tuple[Factory, list[dict[str, Any]]]]:
    """Per model name, how to build it from a grid point and the grid to search."""
    als_grid = ALS_TEMPORAL_GRID if protocol == "temporal" else ALS_GRID
    return {
        "popularity": (lambda p: PopularityRec(), [{}]),
        "itemknn": (lambda p: ItemKNNRec(**p), grid(ITEMKNN_GRID)),
        "bpr": (lambda p: BPRRec(**p), grid(BPR_GRID)),
        "als": (als_factory(base, log_), grid(als_grid)),
    }
