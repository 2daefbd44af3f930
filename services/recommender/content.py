"""Content-based fallback for items nobody has interacted with yet (MovieLens genres).

ALS gives an item with no interactions a zero vector, so a new film could never be
recommended or have neighbours. We place such a *cold* item in the latent space at the mean
of the warm items whose genre set is most similar to its own (Jaccard), i.e. "a new
Animation|Children's film starts where existing Animation|Children's films are". Similar-item
queries for cold items use the genre sets directly. Both are computed at training time, so the
served model only ever reads precomputed arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp


class GenreIndex:
    """Binary item × genre matrix with set-similarity helpers."""

    def __init__(self, item_genres: Sequence[Iterable[str]]) -> None:
        genre_lists = [sorted({g for g in genres if g}) for genres in item_genres]
        self.genres: list[str] = sorted({g for gl in genre_lists for g in gl})
        col = {g: j for j, g in enumerate(self.genres)}
        indptr = np.zeros(len(genre_lists) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(gl) for gl in genre_lists])
        indices = np.fromiter((col[g] for gl in genre_lists for g in gl), dtype=np.int32)
        self.matrix = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr),
            shape=(len(genre_lists), len(self.genres)),
        )
        self.sizes = np.diff(indptr).astype(np.float32)

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[0])

    def mask_any(self, genres: Iterable[str]) -> np.ndarray:
        """Bool mask of items having at least one of ``genres`` (case-insensitive)."""
        wanted = {g.lower() for g in genres}
        cols = [j for j, g in enumerate(self.genres) if g.lower() in wanted]
        if not cols:
            return np.zeros(self.n_items, dtype=bool)
        return np.asarray(self.matrix[:, cols].sum(axis=1)).ravel() > 0

    def jaccard(self, row: int, candidates: np.ndarray | None = None) -> np.ndarray:
        """Jaccard similarity of item ``row``'s genre set with every (candidate) item."""
        m = self.matrix if candidates is None else self.matrix[candidates]
        sizes = self.sizes if candidates is None else self.sizes[candidates]
        inter = np.asarray(m @ self.matrix[row].T.toarray()).ravel()
        union = sizes + self.sizes[row] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            sim = np.where(union > 0, inter / union, 0.0)
        out: np.ndarray = sim.astype(np.float32)
        return out

    def similar(self, row: int, k: int, popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items by genre Jaccard, ties broken by popularity; excludes ``row``."""
        sim = self.jaccard(row)
        sim[row] = -1.0
        order = np.lexsort((-popularity, -sim))[:k]
        keep = order[sim[order] > 0]
        return keep, sim[keep]


def cold_item_factors(
    item_factors: np.ndarray,
    cold: np.ndarray,
    genres: GenreIndex,
    popularity: np.ndarray,
    neighbours: int = 100,
) -> np.ndarray:
    """Factors for the ``cold`` items: mean of the most genre-similar warm items' factors.

    Among warm items with the best Jaccard score, at most ``neighbours`` of the most popular
    are averaged (their factors are the best estimated). Items without genres stay at zero.
    """
    out = np.array(item_factors, dtype=np.float32, copy=True)
    warm = np.flatnonzero(~cold)
    if warm.size == 0:
        return out
    for row in np.flatnonzero(cold):
        if genres.sizes[row] == 0:
            out[row] = 0.0
            continue
        sim = genres.jaccard(int(row), warm)
        best = sim.max()
        if best <= 0:
            out[row] = 0.0
            continue
        cand = warm[sim >= best - 1e-6]
        if cand.size > neighbours:
            cand = cand[np.argsort(-popularity[cand], kind="stable")[:neighbours]]
        out[row] = item_factors[cand].mean(axis=0)
    return out
