"""The models compared offline: three baselines and our own training path.

Each one follows :class:`~services.recommender.evaluation.metrics.Recommender`, so the
protocols fit and score them all alike. implicit is imported inside ``fit``: building the
grids or running the replay protocol does not need it loaded.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from services.recommender.evaluation.data import EventLog, recency_boosted
from services.recommender.model import Model
from services.recommender.training import TrainConfig, UserItemMatrix, train


class PopularityRec:
    """Items by number of training users (the non-personalised baseline)."""

    name = "popularity"

    def __init__(self) -> None:
        self.pop = np.zeros(0, dtype=np.float32)

    def fit(self, train_m: sp.csr_matrix) -> None:
        self.pop = np.diff(train_m.tocsc().indptr).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.pop, (len(users), len(self.pop)))


class ItemKNNRec:
    """implicit's item-item cosine neighbourhood model (``K`` neighbours per item)."""

    name = "itemknn"

    def __init__(self, k_neighbours: int = 100, binary: bool = False) -> None:
        self.k_neighbours = k_neighbours
        self.binary = binary
        self.sim: sp.csr_matrix | None = None
        self.train_m: sp.csr_matrix | None = None

    def fit(self, train_m: sp.csr_matrix) -> None:
        from implicit.nearest_neighbours import CosineRecommender

        m = train_m.copy()
        if self.binary:
            m.data[:] = 1.0
        rec = CosineRecommender(K=self.k_neighbours, num_threads=2)
        rec.fit(m, show_progress=False)
        self.sim = rec.similarity.tocsr()
        self.train_m = m

    def scores(self, users: np.ndarray) -> np.ndarray:
        assert self.sim is not None and self.train_m is not None
        out: np.ndarray = np.asarray((self.train_m[users] @ self.sim).todense(), dtype=np.float32)
        return out


class BPRRec:
    """implicit's Bayesian Personalised Ranking (pairwise SGD on sampled negatives)."""

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = 42,
    ) -> None:
        self.params = {
            "factors": factors,
            "learning_rate": learning_rate,
            "regularization": regularization,
            "iterations": iterations,
        }
        self.seed = seed
        self.user_factors = np.zeros((0, 0), dtype=np.float32)
        self.item_factors = np.zeros((0, 0), dtype=np.float32)

    def fit(self, train_m: sp.csr_matrix) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            bpr = BayesianPersonalizedRanking(**self.params, num_threads=2, random_state=self.seed)
            bpr.fit(train_m, show_progress=False)
        self.user_factors = np.asarray(bpr.user_factors)
        self.item_factors = np.asarray(bpr.item_factors)

    def scores(self, users: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.user_factors[users] @ self.item_factors.T
        return out


class ALSRec:
    """Our training path (weighting + implicit ALS + :class:`Model`), scored like serving.

    ``recency`` = (boost, half-life in events) re-weights each user's training entries by
    recency (:func:`recency_boosted`) before the weighting; None = off."""

    name = "als"

    def __init__(
        self, config: TrainConfig, log_: EventLog, recency: tuple[float, float] | None = None
    ) -> None:
        self.config = config
        self.log = log_
        self.recency = recency
        self.model: Model | None = None

    def fit(self, train_m: sp.csr_matrix) -> None:
        if self.recency is not None and self.recency[0] > 0:
            train_m = recency_boosted(self.log, train_m, *self.recency)
        data = UserItemMatrix(train_m, self.log.user_ids, self.log.item_ids)
        self.model = train(data, self.config, items=self.log.item_meta, keep_history=False)

    def scores(self, users: np.ndarray) -> np.ndarray:
        assert self.model is not None
        vectors = np.zeros((len(users), self.model.n_factors), dtype=np.float32)
        for j, u in enumerate(users):  # users without training events stay at zero
            row = self.model.user_row(self.log.user_ids[u])
            if row is not None:
                vectors[j] = self.model.user_factors[row]
        return self.model.score_vectors(vectors)
