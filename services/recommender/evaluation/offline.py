"""The ``random`` and ``temporal`` protocols: search on validation, refit, test once.

The validation split is always carved out of the training part with the protocol's own cut
(:func:`~services.recommender.evaluation.data.protocol_split`), never out of the test part,
so the chosen hyperparameters have not seen a single test rating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recsys.errors import ConfigError
from services.recommender.evaluation.data import EventLog, offline_splits, protocol_split
from services.recommender.evaluation.metrics import evaluate
from services.recommender.evaluation.results import ProtocolResult, combine_folds
from services.recommender.evaluation.search import SearchResult, model_factories, search
from services.recommender.training import TrainConfig

log = logging.getLogger(__name__)


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
    fit_idx, val_idx = protocol_split(protocol, log_, train_idx, seed + 1)
    train_m, fit_m = log_.matrix(train_idx), log_.matrix(fit_idx)
    test_pos = log_.matrix(test_idx, min_rating=min_rating)
    val_pos = log_.matrix(val_idx, min_rating=min_rating)
    factories = model_factories(log_, base, protocol)
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
