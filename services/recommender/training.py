"""Training: raw interactions → user-item matrix → implicit ALS → :class:`Model`.

The matrix holds *raw* accumulated weights (event weights summed per user and item, or
ratings); the confidence weighting (BM25 by default) is fitted on it and saved with the model
so that fold-in applies the same transform. The raw matrix is kept as the users' training
history (for excluding seen items and for explanations).

Sources: a data set (MovieLens via ``recsys_tools.data``), a CSV of ``user,item,weight``, or the
per-user weights hashes the events service keeps in Redis (:func:`read_redis_weights`); from
any of them, the users recorded as forgotten are left out (:func:`drop_users`).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.store.keys import KeySchema
from services.recommender import artifact
from services.recommender.content import GenreIndex, cold_item_factors
from services.recommender.model import ItemMeta, Model
from services.recommender.weights import Weighting, WeightingConfig

log = logging.getLogger(__name__)

COLD_MODES = ("content", "zero")

# Chosen on the protocol-1 validation split of MovieLens-100K (docs/evaluation.md).
ML100K_TUNED: dict[str, Any] = {
    "scheme": "log",
    "alpha": 5.0,
    "regularization": 50.0,
    "factors": 64,
}


@dataclass(frozen=True)
class TrainConfig:
    """ALS hyperparameters and the weighting. Library defaults are conservative (they work on
    tiny matrices too); ``recsys train`` starts from :data:`ML100K_TUNED`, the protocol-1
    validation choice (docs/evaluation.md). ``num_threads`` 2 suits the small nodes."""

    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    use_cg: bool = True
    num_threads: int = 2
    random_state: int = 42
    cold_items: str = "content"

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1 or self.regularization < 0:
            raise ConfigError("ALS needs factors >= 1, iterations >= 1, regularization >= 0")
        if self.cold_items not in COLD_MODES:
            raise ConfigError(f"cold_items must be one of {', '.join(COLD_MODES)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weighting"] = self.weighting.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        kwargs = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "weighting" in kwargs and isinstance(kwargs["weighting"], Mapping):
            kwargs["weighting"] = WeightingConfig.from_dict(kwargs["weighting"])
        return cls(**kwargs)

    def with_params(self, **params: Any) -> TrainConfig:
        """A copy with hyperparameters replaced; ``scheme``/``k1``/``b``/``alpha`` go to the
        weighting (what a grid search varies)."""
        wkeys = {"scheme", "k1", "b", "alpha", "log_eps", "offset", "offset_floor"}
        wparams = {k: v for k, v in params.items() if k in wkeys}
        own = {k: v for k, v in params.items() if k not in wkeys}
        weighting = replace(self.weighting, **wparams) if wparams else self.weighting
        return replace(self, weighting=weighting, **own)


@dataclass(frozen=True)
class UserItemMatrix:
    """Raw weights (users × items, CSR, duplicates summed) with the external ids of its axes."""

    matrix: sp.csr_matrix
    user_ids: list[str]
    item_ids: list[str]


def build_matrix(
    users: Sequence[str] | np.ndarray,
    items: Sequence[str] | np.ndarray,
    weights: Sequence[float] | np.ndarray,
    *,
    item_ids: Sequence[str] | None = None,
    user_ids: Sequence[str] | None = None,
) -> UserItemMatrix:
    """Sum weights per (user, item). ``item_ids``/``user_ids`` fix the axes (e.g. the whole
    catalogue, so items without interactions still get a row); ids outside them are an error.
    Non-positive totals are dropped: ALS reads an explicit zero/negative as a negative."""
    u_arr = np.asarray(users, dtype=object)
    i_arr = np.asarray(items, dtype=object)
    w_arr = np.asarray(weights, dtype=np.float32)
    if not len(u_arr) == len(i_arr) == len(w_arr):
        raise DataError("users, items and weights differ in length")
    uids, urow = _index(u_arr, user_ids, "user")
    iids, irow = _index(i_arr, item_ids, "item")
    m = sp.csr_matrix((w_arr, (urow, irow)), shape=(len(uids), len(iids)), dtype=np.float32)
    m.sum_duplicates()
    m.data[~np.isfinite(m.data)] = 0.0
    m.data[m.data < 0] = 0.0
    m.eliminate_zeros()
    m.sort_indices()
    return UserItemMatrix(m, uids, iids)


def _index(
    values: np.ndarray, fixed: Sequence[str] | None, what: str
) -> tuple[list[str], np.ndarray]:
    if fixed is None:
        uniq, inverse = np.unique(values.astype(str), return_inverse=True)
        return [str(v) for v in uniq], inverse.astype(np.int64)
    ids = [str(v) for v in fixed]
    pos = {v: i for i, v in enumerate(ids)}
    try:
        rows = np.fromiter((pos[str(v)] for v in values), dtype=np.int64, count=len(values))
    except KeyError as exc:
        raise DataError(f"{what} {exc.args[0]!r} is not in the given {what} ids") from None
    return ids, rows


def drop_users(data: UserItemMatrix, users: Collection[str]) -> UserItemMatrix:
    """``data`` without the rows of ``users`` (the forgotten ones), items kept as they are.

    A user who asked to be forgotten must not be in the next model, whatever source the
    matrix came from: a data set or a CSV does not forget, so ``recsys train`` applies the
    store's forgotten records to the matrix built from it.
    """
    if not users:
        return data
    n = len(data.user_ids)
    keep = np.fromiter((u not in users for u in data.user_ids), dtype=bool, count=n)
    if keep.all():
        return data
    log.info("left out %d forgotten users", int((~keep).sum()))
    kept = [u for u, k in zip(data.user_ids, keep.tolist(), strict=True) if k]
    return UserItemMatrix(data.matrix[keep], kept, data.item_ids)


def matrix_from_user_weights(
    rows: Iterable[tuple[str, Mapping[str, float]]],
    *,
    item_ids: Sequence[str] | None = None,
) -> UserItemMatrix:
    """The matrix from per-user weight maps (what Redis hashes hold). Items outside a given
    ``item_ids`` catalogue are dropped (with a count in the log): the model cannot serve them."""
    users: list[str] = []
    items: list[str] = []
    weights: list[float] = []
    known = None if item_ids is None else set(item_ids)
    dropped = 0
    for user, item_weights in rows:
        for item, weight in item_weights.items():
            if known is not None and item not in known:
                dropped += 1
                continue
            users.append(user)
            items.append(item)
            weights.append(float(weight))
    if dropped:
        log.warning("dropped %d interactions with items outside the catalogue", dropped)
    return build_matrix(users, items, weights, item_ids=item_ids)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def user_id_from_weights_key(schema: KeySchema, key: str) -> str | None:
    """Invert ``schema.weights(user_id)``; None for any other key."""
    return schema.user_of_weights_key(key)


def read_redis_weights(
    client: Any, schema: KeySchema, *, batch: int = 500
) -> Iterator[tuple[str, dict[str, float]]]:
    """SCAN the per-user weights hashes and read them ``batch`` at a time in pipelines.

    SCAN may return a key twice (rehashing); duplicates are skipped so no user counts twice.
    """
    seen: set[str] = set()
    pending: list[tuple[str, str]] = []

    def flush() -> Iterator[tuple[str, dict[str, float]]]:
        pipe = client.pipeline(transaction=False)
        for key, _ in pending:
            pipe.hgetall(key)
        for (_, user), raw in zip(pending, pipe.execute(), strict=True):
            weights: dict[str, float] = {}
            for item, value in raw.items():
                try:
                    weights[_decode(item)] = float(_decode(value))
                except ValueError:
                    log.warning("non-numeric weight for user %s item %s", user, _decode(item))
            if weights:
                yield user, weights
        pending.clear()

    for raw_key in client.scan_iter(match=schema.weights_pattern(), count=1000):
        key = _decode(raw_key)
        user = schema.user_of_weights_key(key)
        if user is None or user in seen:
            continue
        seen.add(user)
        pending.append((key, user))
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


def read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[str], list[float]]:
    """``user,item,weight`` rows (a header row starting with ``user`` is skipped)."""
    users: list[str] = []
    items: list[str] = []
    weights: list[float] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or (lineno == 1 and row[0].strip().lower() in ("user", "user_id")):
                continue
            if len(row) < 3:
                raise DataError(f"{path}:{lineno}: expected user,item,weight")
            try:
                weight = float(row[2])
            except ValueError:
                raise DataError(f"{path}:{lineno}: weight {row[2]!r} is not a number") from None
            users.append(row[0].strip())
            items.append(row[1].strip())
            weights.append(weight)
    return users, items, weights


def fit_factors(
    confidence: sp.csr_matrix, config: TrainConfig, *, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Fit implicit's CPU ALS on a confidence matrix; returns (user_factors, item_factors).

    BLAS is pinned to one thread around the fit: implicit parallelises over users itself and
    a threaded OpenBLAS underneath makes it many times slower (implicit warns about this).
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=1.0,  # our Weighting already applied alpha
            iterations=config.iterations,
            use_cg=config.use_cg,
            num_threads=config.num_threads,
            random_state=config.random_state,
        )
        als.fit(confidence, show_progress=show_progress)
    return (
        np.ascontiguousarray(als.user_factors, dtype=np.float32),
        np.ascontiguousarray(als.item_factors, dtype=np.float32),
    )


class FactorEngine(Protocol):
    """What factorises the confidence matrix. Everything around it (sources, weighting, cold
    items, the artifact) is shared, so engines differ only in how they fit; ``params`` holds
    what an engine chose during its last fit, recorded in the model's config."""

    name: str
    params: dict[str, Any]

    def fit(
        self, confidence: sp.csr_matrix, config: TrainConfig, show_progress: bool
    ) -> tuple[np.ndarray, np.ndarray]: ...


class ImplicitALS:
    """The default engine: implicit's CPU ALS in this process (:func:`fit_factors`)."""

    name = "implicit"

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def fit(
        self, confidence: sp.csr_matrix, config: TrainConfig, show_progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        return fit_factors(confidence, config, show_progress=show_progress)


def train(
    data: UserItemMatrix,
    config: TrainConfig,
    *,
    items: Mapping[str, ItemMeta] | None = None,
    show_progress: bool = False,
    metrics: Mapping[str, Any] | None = None,
    keep_history: bool = True,
    engine: FactorEngine | None = None,
) -> Model:
    """Fit ALS and wrap the result. Items without interactions get genre-based vectors when
    ``config.cold_items == "content"`` and metadata is known. ``engine`` defaults to
    :class:`ImplicitALS`; the Spark one is ``services.recommender.spark_als.SparkALS``, passed
    in by the caller so that this module never imports Spark."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread for the whole of training: implicit parallelises over users itself, and
    # the small dense products around it (YᵀY, cold items) only lose to thread start-up and
    # contention on a busy 2-core node.
    with threadpool_limits(1, "blas"):
        return _train(
            data,
            config,
            items=items,
            show_progress=show_progress,
            metrics=metrics,
            keep_history=keep_history,
            engine=engine or ImplicitALS(),
        )


def _train(
    data: UserItemMatrix,
    config: TrainConfig,
    *,
    items: Mapping[str, ItemMeta] | None,
    show_progress: bool,
    metrics: Mapping[str, Any] | None,
    keep_history: bool,
    engine: FactorEngine,
) -> Model:
    started = time.perf_counter()
    cpu_started = time.process_time()
    phases: dict[str, float] = {}
    raw = data.matrix
    user_ids = list(data.user_ids)
    active = np.diff(raw.indptr) > 0
    if not active.all():
        # A user without interactions would get a zero vector and arbitrary results; leaving
        # them out makes the model treat them as unknown (fold-in or popularity instead).
        raw = raw[active]
        user_ids = [u for u, keep in zip(user_ids, active, strict=True) if keep]
    weighting = Weighting.fit(config.weighting, raw)
    confidence = weighting.transform(raw)
    phases["weighting_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    user_factors, item_factors = engine.fit(confidence, config, show_progress)
    phases["fit_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    popularity = np.diff(raw.tocsc().indptr).astype(np.float32)  # users per item
    cold = popularity == 0
    meta = dict(items or {})
    if config.cold_items == "content" and cold.any() and meta:
        genres = GenreIndex([meta[i].genres if i in meta else () for i in data.item_ids])
        item_factors = cold_item_factors(item_factors, cold, genres, popularity)
    elif cold.any():
        item_factors[cold] = 0.0
    history = (raw.indptr, raw.indices, raw.data) if keep_history else None
    phases["cold_items_s"] = time.perf_counter() - mark
    cfg = config.to_dict()
    cfg.update({"n_users": raw.shape[0], "n_items": raw.shape[1], "nnz": int(raw.nnz)})
    cfg["engine"] = engine.name
    if engine.params:
        cfg["engine_params"] = dict(engine.params)
    mark = time.perf_counter()
    model = Model(
        version=artifact.new_version_id(),
        item_ids=data.item_ids,
        user_ids=user_ids,
        item_factors=item_factors,
        user_factors=user_factors,
        regularization=config.regularization,
        weighting=weighting,
        item_popularity=popularity,
        cold_items=cold,
        history=history,
        items=meta,
        config=cfg,
        metrics=metrics,
    )
    phases["model_s"] = time.perf_counter() - mark
    elapsed = time.perf_counter() - started
    # Wall time on a shared node mostly measures the neighbours; CPU time (all threads) is
    # the work this process did.
    model.config["train_s"] = elapsed
    model.config["train_cpu_s"] = time.process_time() - cpu_started
    model.config["train_phases_s"] = {k: round(v, 4) for k, v in phases.items()}
    log.info(
        "trained ALS (%s) on %d users x %d items (%d nnz) in %.2fs (%s)",
        engine.name,
        raw.shape[0],
        raw.shape[1],
        raw.nnz,
        elapsed,
        model.config["train_phases_s"],
    )
    return model


def items_from_movielens(items: Mapping[str, Any]) -> dict[str, ItemMeta]:
    """``recsys_tools.data`` ItemInfo → ItemMeta (duck-typed so this module need not import it)."""
    return {
        item_id: ItemMeta(item_id, info.title, info.year, tuple(info.genres))
        for item_id, info in items.items()
    }


def default_store() -> Path:
    return Path(os.environ.get("MODEL_STORE", "models"))
