"""``recsys tune``: a time-boxed Optuna TPE search over model families and their
hyperparameters, scored on a validation split carved out of the training part only.

The validation split is the evaluation protocol's own rule applied inside its training part
(:func:`holdout.validation_split`), so the test part of ``recsys evaluate --data`` never
influences a choice. The family is one more categorical hyperparameter; every family is
enqueued once with a reasonable start, so a short budget still compares them all before TPE
concentrates on the promising ones. Optuna (the ``[tune]`` extra) rather than our grids in
:mod:`.search`: it time-boxes, handles the conditional space (each family its own parameters)
and samples it with TPE, which a grid over five families cannot do in minutes.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.errors import ConfigError, DataError
from services.recommender import families
from services.recommender.evaluation import holdout

log = logging.getLogger(__name__)

# The validation users a trial scores: enough for a stable NDCG@10 on a log of any size, few
# enough that scoring stays a small part of a trial.
VALIDATION_USERS = 5000

# One start per family, in the order they are tried; each is the family's textbook setting.
STARTS: dict[str, dict[str, Any]] = {
    "item_knn": {"neighbours": 100, "k1": 1.2, "b": 0.75},
    "rp3beta": {"alpha": 1.0, "beta": 0.5, "neighbours": 200, "input": "binary"},
    "ease": {"lambda": 250.0, "input": "binary"},
    "als": {"factors": 64, "regularization": 0.05, "alpha": 2.0, "iterations": 15, "scheme": "log"},
}


def suggest(trial: Any, family: str) -> dict[str, Any]:
    """The search space of one family (names prefixed, since Optuna's space is global)."""
    if family == "als":
        return {
            "factors": trial.suggest_int("als_factors", 16, 256, log=True),
            "regularization": trial.suggest_float("als_regularization", 1e-3, 100.0, log=True),
            "alpha": trial.suggest_float("als_alpha", 0.1, 50.0, log=True),
            "iterations": trial.suggest_int("als_iterations", 5, 30),
            "scheme": trial.suggest_categorical("als_scheme", ["none", "log", "bm25"]),
        }
    if family == "ease":
        return {
            "lambda": trial.suggest_float("ease_lambda", 1.0, 5000.0, log=True),
            "input": trial.suggest_categorical("ease_input", ["binary", "log"]),
        }
    if family == "rp3beta":
        return {
            "alpha": trial.suggest_float("rp3beta_alpha", 0.2, 1.5),
            "beta": trial.suggest_float("rp3beta_beta", 0.0, 1.0),
            "neighbours": trial.suggest_int("rp3beta_neighbours", 10, 1000, log=True),
            "input": trial.suggest_categorical("rp3beta_input", ["binary", "log"]),
        }
    if family == "item_knn":
        return {
            "neighbours": trial.suggest_int("item_knn_neighbours", 10, 1000, log=True),
            "k1": trial.suggest_float("item_knn_k1", 0.2, 5.0, log=True),
            "b": trial.suggest_float("item_knn_b", 0.0, 1.0),
        }
    raise ConfigError(f"model family {family!r} must be one of {', '.join(families.FAMILIES)}")


def _start_trial(family: str) -> dict[str, Any]:
    fixed = {f"{family}_{k}": v for k, v in STARTS[family].items()}
    return {"family": family, **fixed}


@dataclass
class TuneResult:
    config: families.FamilyConfig
    validation_ndcg: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    validation_users: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "validation": {
                "ndcg@10": self.validation_ndcg,
                "users": self.validation_users,
                "trials": len(self.trials),
                "search_s": round(self.elapsed_s, 1),
            },
            "trials": self.trials,
        }


def tune(
    log_: holdout.Log,
    *,
    protocol: str = "holdout",
    time_budget_s: float,
    families_: Sequence[str] = families.FAMILIES,
    seed: int = 0,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    validation_users: int = VALIDATION_USERS,
) -> TuneResult:
    """Search within ``time_budget_s`` seconds from the call (the splits included): a new
    trial starts only while the slowest trial so far still fits in what is left."""
    import optuna

    started = clock()
    unknown = [f for f in families_ if f not in families.FAMILIES]
    if unknown or not families_:
        known = ", ".join(families.FAMILIES)
        raise ConfigError(f"families {', '.join(unknown) or '(none)'}: choose among {known}")
    outer = holdout.split(log_, protocol)
    val = holdout.validation_split(log_, outer, protocol)
    users = holdout.sample_users(val.users, validation_users, seed)
    if len(users) == 0:
        raise DataError("no validation user: the training part is too small to tune on")
    log.info("validation split: %d users (%d scored)", val.n_users, len(users))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        # multivariate TPE with groups (one group per family's conditional space) is still
        # marked experimental; it is what samples a conditional space well.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    order = [f for f in STARTS if f in families_]
    for family in order:
        study.enqueue_trial(_start_trial(family))
    slowest = [0.0]
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        t0 = clock()
        family = trial.suggest_categorical("family", list(order))
        params = suggest(trial, family)
        fitted = families.build(families.FamilyConfig(family, params), val.train)
        ndcg = holdout.evaluate_split(val, fitted, users=users)["ndcg@10"]
        seconds = clock() - t0
        slowest[0] = max(slowest[0], seconds)
        trials.append(
            {"family": family, "params": params, "ndcg@10": ndcg, "seconds": round(seconds, 2)}
        )
        log.info(
            "trial %d %s %s: ndcg@10 %.4f (%.1fs)", trial.number, family, params, ndcg, seconds
        )
        return ndcg

    def stop_in_time(study_: Any, _trial: Any) -> None:
        if clock() - started + slowest[0] > time_budget_s:
            study_.stop()

    remaining = time_budget_s - (clock() - started)
    if remaining <= 0:
        raise ConfigError(
            f"the time budget is used up before the first trial (splitting the log took "
            f"{clock() - started:.1f}s): give --time-budget more time"
        )
    study.optimize(
        objective,
        timeout=remaining,
        callbacks=[stop_in_time],
        show_progress_bar=progress,
        catch=(np.linalg.LinAlgError, MemoryError),
    )
    if not trials:
        raise DataError(
            f"no trial finished within --time-budget {time_budget_s:g}s: give more time"
        )
    # The first trial with the best validation NDCG@10 (the study's best, in our own record).
    winner = max(trials, key=lambda r: float(r["ndcg@10"]))
    return TuneResult(
        families.FamilyConfig(winner["family"], dict(winner["params"])),
        float(winner["ndcg@10"]),
        trials,
        len(users),
        clock() - started,
    )
