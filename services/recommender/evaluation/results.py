"""What a protocol run returns, for the offline and the replay protocols alike, and the
K-fold aggregate of several runs (one result type, so the CLI prints and writes them all
the same way)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.recommender.evaluation.search import SearchResult


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
