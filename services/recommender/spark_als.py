"""Spark MLlib ALS as a training engine: the same confidence matrix in, the same factors out.

Only the factorisation moves to Spark. The sources, the weighting, the cold items and the
artifact stay those of :mod:`services.recommender.training`, so a model trained on Spark is
served, folded in and evaluated exactly like one trained with implicit, and the recommender
never imports Spark. This is the only module that imports pyspark (an import contract in
``pyproject.toml`` says so); pyspark comes from the ``[spark]`` extra.

Spark's implicit ALS and implicit's differ in two places, mapped here so that the same
``TrainConfig`` gives comparable models (docs/model.md, "The Spark engine"):

- **Confidence.** implicit reads the weighted value ``w`` as the confidence ``c = w``; Spark
  reads a rating ``r`` as ``c = 1 + alpha * r``. We hand Spark ``r = w`` and ``alpha = 1``:
  ``c = 1 + w``, one more unit of confidence per observed entry (the weighting's own alpha is
  already in ``w``). ``w - 1`` would match exactly but turns weak positives (``w < 1``) into
  negatives, which Spark reads as preference 0.
- **Regularisation.** Spark multiplies ``regParam`` by the number of interactions of each row
  it solves (ALS-WR); implicit uses one constant. We set ``regParam = regularization / (mean
  interactions per user)``, so a user with an average history is regularised exactly as with
  implicit, and fold-in at request time (which uses the constant, :class:`Model`) agrees with
  the training on the average user. Heavier users and popular items are regularised more.

``nonnegative`` stays False (implicit's factors are unconstrained too) and
``coldStartStrategy`` does not apply: we read the factor tables, never ``transform()``, and
rows Spark never saw (items without interactions) are left at zero for the cold-item step.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError

if TYPE_CHECKING:
    from services.recommender.training import TrainConfig

log = logging.getLogger(__name__)

# Set by spark-submit's Python runner: the session then comes from spark-submit's own
# configuration (the cluster's master, its resources), which code must not override.
_SUBMIT_ENV = "PYSPARK_GATEWAY_PORT"


@dataclass(frozen=True)
class SparkSettings:
    """Where and how Spark runs. ``master`` None means ``local[2]`` (one executor thread per
    core of the small nodes) unless the process was started by ``spark-submit``, whose master
    wins. The driver memory is modest by default: in local mode the driver is the executor
    and shares the machine with everything else."""

    master: str | None = None
    driver_memory: str = "1g"
    reg_param: float | None = None  # None: mapped from TrainConfig.regularization (above)
    # ALS's user and item blocks. None: the session's default parallelism (its cores), so a
    # small matrix in local mode is not cut into MLlib's default ten blocks per side, each a
    # task per stage and iteration (most of the time on small data).
    num_blocks: int | None = None
    shuffle_partitions: int = 4

    def __post_init__(self) -> None:
        if self.reg_param is not None and self.reg_param < 0:
            raise ConfigError("--spark-reg-param must be >= 0")
        if self.shuffle_partitions < 1 or (self.num_blocks is not None and self.num_blocks < 1):
            raise ConfigError("shuffle_partitions and num_blocks must be >= 1")


def mapped_reg_param(confidence: sp.csr_matrix, regularization: float) -> float:
    """implicit's constant λ → Spark's per-interaction ``regParam`` (module docstring)."""
    users = int((np.diff(confidence.indptr) > 0).sum())
    mean_per_user = confidence.nnz / users if users else 1.0
    return float(regularization / mean_per_user)


class SparkALS:
    """The Spark engine for :func:`services.recommender.training.train`; after a fit,
    :attr:`params` holds what it chose (recorded in the model's config)."""

    name = "spark"

    def __init__(self, settings: SparkSettings | None = None) -> None:
        self.settings = settings or SparkSettings()
        self.params: dict[str, Any] = {}

    def fit(
        self, confidence: sp.csr_matrix, config: TrainConfig, show_progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        import pyarrow as pa
        from pyspark.ml.recommendation import ALS

        reg = self.settings.reg_param
        if reg is None:
            reg = mapped_reg_param(confidence, config.regularization)
        coo = confidence.tocoo()
        table = pa.table(
            {
                "user": coo.row.astype(np.int32),
                "item": coo.col.astype(np.int32),
                "rating": coo.data.astype(np.float32),
            }
        )
        started = time.perf_counter()
        spark, owned = _session(self.settings, show_progress)
        try:
            session_s = time.perf_counter() - started
            blocks = self.settings.num_blocks or max(1, spark.sparkContext.defaultParallelism)
            ratings = spark.createDataFrame(table).repartition(blocks)
            als = ALS(
                rank=config.factors,
                maxIter=config.iterations,
                regParam=reg,
                implicitPrefs=True,
                alpha=1.0,
                nonnegative=False,
                userCol="user",
                itemCol="item",
                ratingCol="rating",
                seed=config.random_state,
                coldStartStrategy="drop",
                numUserBlocks=blocks,
                numItemBlocks=blocks,
            )
            fitted = als.fit(ratings)
            n_users, n_items = confidence.shape
            user_factors = _dense(fitted.userFactors.toArrow(), n_users, config.factors)
            item_factors = _dense(fitted.itemFactors.toArrow(), n_items, config.factors)
            master = spark.sparkContext.master
        finally:
            if owned:
                spark.stop()
        self.params = {
            "master": master,
            "reg_param": reg,
            "alpha": 1.0,
            "implicit_prefs": True,
            "nonnegative": False,
            "blocks": blocks,
            "session_s": round(session_s, 3),
        }
        log.info("Spark ALS on %s: regParam %.4g, %d iterations", master, reg, config.iterations)
        return user_factors, item_factors


def _session(settings: SparkSettings, show_progress: bool) -> tuple[Any, bool]:
    """The active session if there is one (a notebook, a test's, spark-submit's), else a new
    one that the caller stops. Local sessions listen on loopback only and run without the UI;
    Spark's console progress bar (its stages) is the progress shown."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName("recsys-train")
    if settings.master or _SUBMIT_ENV not in os.environ:
        master = settings.master or "local[2]"
        builder = builder.master(master)
        if master.startswith("local"):
            # Loopback only: without it Spark binds to the host's outward address.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            builder = (
                builder.config("spark.driver.memory", settings.driver_memory)
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.ui.enabled", "false")
            )
    builder = builder.config(
        "spark.sql.shuffle.partitions", str(settings.shuffle_partitions)
    ).config("spark.ui.showConsoleProgress", "true" if show_progress else "false")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark, True


def _dense(table: Any, rows: int, rank: int) -> np.ndarray:
    """Spark's (id, features) factor table → a dense float32 array; rows Spark did not
    return (no interactions) stay zero."""
    import pyarrow.compute as pc

    out = np.zeros((rows, rank), dtype=np.float32)
    if table.num_rows == 0:
        return out
    ids = table.column("id").to_numpy()
    flat = pc.list_flatten(table.column("features")).to_numpy(zero_copy_only=False)
    out[ids] = np.asarray(flat, dtype=np.float32).reshape(len(ids), rank)
    return out
