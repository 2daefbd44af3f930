"""The confidence weighting of the user-item matrix (how raw weights become ALS confidences).

Raw weights come from events: :class:`recsys.weights.EventWeights` (``EVENT_WEIGHTS``) turns
one event into a raw weight, the events service accumulates them per user and item in Redis,
and training from a data set applies the same mapping, so a model trained offline and the
weights folded in online agree.

:class:`Weighting` turns accumulated raw weights into ALS confidences (BM25 or log scaling).
Fold-in at request time must apply *exactly* the transform used in training, otherwise a
user's folded-in vector lives on a different scale from the trained ones; so the transform
keeps the per-item statistics it learned (``item_norm``) and is saved with the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError

WEIGHTINGS = ("none", "bm25", "log")


@dataclass(frozen=True)
class WeightingConfig:
    """How raw weights become confidences. ``alpha`` multiplies the result (implicit's alpha).

    ``bm25`` follows implicit's ``bm25_weight`` applied to the item×user matrix (as in its
    examples): entries of items with many interactions are damped (``B`` controls how much) and
    users with many items get a lower idf, so heavy users do not dominate the item factors.
    """

    scheme: str = "bm25"
    k1: float = 100.0
    b: float = 0.8
    alpha: float = 1.0
    log_eps: float = 1.0
    # Subtracted from raw weights before the scheme (floored at ``offset_floor``): with star
    # ratings, offset 3 makes a 1–3-star rating a weak positive and a 5-star one a strong one,
    # when the target is "liked" (ratings ≥ 4) rather than "watched". 0 = off.
    offset: float = 0.0
    offset_floor: float = 0.05

    def __post_init__(self) -> None:
        if self.scheme not in WEIGHTINGS:
            raise ConfigError(f"weighting {self.scheme!r} must be one of {', '.join(WEIGHTINGS)}")
        if self.alpha <= 0 or self.k1 <= 0 or not 0.0 <= self.b <= 1.0 or self.log_eps <= 0:
            raise ConfigError("weighting needs alpha > 0, k1 > 0, 0 <= b <= 1, log_eps > 0")
        if self.offset < 0 or self.offset_floor <= 0:
            raise ConfigError("weighting needs offset >= 0 and offset_floor > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightingConfig:
        return cls(**{k: data[k] for k in _CONFIG_KEYS if k in data})


_CONFIG_KEYS = ("scheme", "k1", "b", "alpha", "log_eps", "offset", "offset_floor")


class Weighting:
    """A fitted weighting: keeps the item statistics needed to weight one user's row later."""

    def __init__(self, config: WeightingConfig, item_norm: np.ndarray, n_items: int) -> None:
        self.config = config
        self.item_norm = np.asarray(item_norm)  # a plain view of a memory map: cheaper to index
        self.n_items = n_items

    @classmethod
    def fit(cls, config: WeightingConfig, user_items: sp.csr_matrix) -> Weighting:
        n_items = user_items.shape[1]
        if config.scheme == "bm25":
            item_sums = np.asarray(user_items.sum(axis=0), dtype=np.float64).ravel()
            avg = item_sums.mean() if item_sums.size and item_sums.mean() > 0 else 1.0
            norm = ((1.0 - config.b) + config.b * item_sums / avg).astype(np.float32)
        else:
            norm = np.ones(n_items, dtype=np.float32)
        return cls(config, norm, n_items)

    def _idf(self, n_user_items: np.ndarray) -> np.ndarray:
        out: np.ndarray = math.log(max(self.n_items, 1)) - np.log1p(n_user_items)
        return out

    def transform(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """Confidence matrix for a users×items matrix of raw weights (values must be > 0)."""
        m = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        m.sum_duplicates()
        m.eliminate_zeros()
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        m.data = self._weigh(m.data, m.indices, rows, np.diff(m.indptr))
        return m

    def transform_row(self, item_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Confidences for one user's items (fold-in), identical to :meth:`transform`'s row."""
        n = np.array([len(item_rows)])
        return self._weigh(
            np.asarray(values, dtype=np.float32),
            np.asarray(item_rows),
            np.zeros(len(item_rows), dtype=np.int64),
            n,
        )

    def _weigh(
        self, data: np.ndarray, cols: np.ndarray, rows: np.ndarray, row_counts: np.ndarray
    ) -> np.ndarray:
        cfg = self.config
        x = data.astype(np.float32)
        if cfg.offset > 0:
            x = np.maximum(x - np.float32(cfg.offset), np.float32(cfg.offset_floor))
        if cfg.scheme == "bm25":
            idf = self._idf(row_counts.astype(np.float64)).astype(np.float32)
            x = x * (cfg.k1 + 1.0) / (cfg.k1 * self.item_norm[cols] + x) * idf[rows]
            # idf can reach 0 for a user who touched (almost) every item; keep entries positive
            # so implicit treats them as positives rather than negatives.
            x = np.maximum(x, 1e-3)
        elif cfg.scheme == "log":
            x = np.log1p(x / cfg.log_eps)
        out: np.ndarray = (x * cfg.alpha).astype(np.float32)
        return out
