"""Approximate candidate retrieval: an HNSW index over the item factors (usearch).

Exact scoring reads every item's factors on every request: one mat-vec over the catalog, ~20
ms of CPU at a million items × 64 factors. Above ``ANN_MIN_ITEMS`` items the recommender
asks this index for a few hundred candidates instead and scores only those exactly, so the
answer is still ranked by the model's own float32 scores and every exclusion and filter is
applied by row, as on the exact path. What the index may miss is an item that exact scoring
would have ranked in the top ``k`` (recall@10 is measured in ``bench.large_catalog``).

Why usearch: its index file is memory-mapped as it is (``view=True``), so N worker
processes share one copy in the page cache and a hot reload maps the new file without a
copy, like the ``.npy`` factors next to it; the wheel is small and needs only numpy. Its
vectors are stored as float16 (half the bytes of the factors; candidates are re-ranked in
float32 anyway). ``bench.ann_libraries`` measured it against faiss at 200,000 × 64: the
same recall as faiss HNSW at the same settings, at about twice faiss's query time (0.8 vs
0.4 ms), and half the memory, shared across workers where faiss copies its index into each
(docs/benchmarks.md, History, "Approximate candidate retrieval and the Recommend margin").

Scores are inner products (ALS), so the index uses the inner-product metric.

Filters. The library cannot restrict a search to a category, so a category filter over-fetches
by the inverse of the share of the catalog it keeps; a filter that keeps less than
``exact_below`` of the catalog scores its own items exactly instead (no approximation, and
cheaper than an over-fetch that large). Exclusions (seen, suppressed, requested) are at most
a few thousand rows: the fetch grows by their count. A search that still leaves fewer than
``k`` items doubles its fetch, and past a quarter of the catalog the request scores exactly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# The artifact file that holds the index (``artifact.publish(files=...)``).
INDEX_FILE = "item_index.usearch"
LIBRARY = "usearch"
# Catalogs at least this large get an index when a model is published, and are served from it
# (ANN_MIN_ITEMS). Below it every item is scored exactly, with no recall loss. Not measured
# yet: exact scoring served 100,000 items at 318-454 QPS on two cores (bench.recommend_load,
# docs/benchmarks.md), and bench.large_catalog --items N is how to place it.
DEFAULT_MIN_ITEMS = 200_000
# HNSW graph degree and build-time beam: the usearch defaults' neighbourhood, a wider beam for
# a better graph at a one-off cost.
CONNECTIVITY = 16
EXPANSION_ADD = 128


@dataclass(frozen=True)
class SearchSettings:
    """How hard a request searches; the defaults are ``RecommenderSettings``' (docs/recommender.md).

    ``fetch``: candidates re-ranked exactly per request (at least; more with exclusions and
    filters); the HNSW search beam is the larger of it and the index's ``expansion``.
    ``exact_below``: a category filter keeping less than this share of the catalog is scored
    exactly.
    """

    fetch: int = 200
    exact_below: float = 0.1


def build(item_factors: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Build the index over every item row (key = row) and write it to ``path``."""
    from usearch.index import Index

    y = np.ascontiguousarray(item_factors, dtype=np.float32)
    index = Index(ndim=y.shape[1], metric="ip", dtype="f16", connectivity=CONNECTIVITY,
                  expansion_add=EXPANSION_ADD)  # fmt: skip
    index.add(np.arange(y.shape[0], dtype=np.uint64), y, threads=os.cpu_count() or 1)
    index.save(os.fspath(path))


class ItemIndex:
    """A memory-mapped index plus the factors to re-rank its candidates exactly.

    Read-only after construction: concurrent requests share it without locks.
    """

    def __init__(
        self, path: str | os.PathLike[str], item_factors: np.ndarray, expansion: int = 200
    ) -> None:
        from usearch.index import Index

        # The beam is set once: a search's is the larger of it and the count it asks for, so
        # no request changes shared state.
        index = Index.restore(os.fspath(path), view=True, expansion_search=expansion)
        if index is None:
            raise ValueError(f"{path}: not a usearch index")
        if len(index) != item_factors.shape[0] or index.ndim != item_factors.shape[1]:
            raise ValueError(
                f"{path}: index of {len(index)} × {index.ndim} does not match the factors "
                f"{item_factors.shape[0]} × {item_factors.shape[1]}"
            )
        self._index: Any = index
        self.path = Path(path)
        self._y = np.asarray(item_factors)
        self.n_items = int(item_factors.shape[0])

    def search(
        self,
        vector: np.ndarray,
        k: int,
        exclude: np.ndarray,
        allowed: np.ndarray | None,
        share: float,
        settings: SearchSettings,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Rows and exact scores of the best ``k`` allowed, not excluded candidates, best
        first; None when the index cannot answer within a quarter of the catalog (the caller
        scores exactly). ``allowed`` is a bool mask over rows (None: every item) keeping
        ``share`` of the catalog."""
        n = int((max(settings.fetch, k) + exclude.size) / max(share, 1e-9))
        while True:
            n = min(n, self.n_items)
            found = self._index.search(vector, n, threads=1)
            rows = np.asarray(found.keys, dtype=np.int64)
            keep = ~np.isin(rows, exclude) if exclude.size else np.ones(rows.size, dtype=bool)
            if allowed is not None:
                keep &= allowed[rows]
            cand = rows[keep]
            if cand.size >= k or rows.size < n or n >= self.n_items:
                scores = self._y[cand] @ vector
                order = np.argsort(-scores, kind="stable")[:k]
                return cand[order], np.asarray(scores[order], dtype=np.float32)
            if 2 * n > self.n_items // 4:
                return None
            n *= 2

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size
