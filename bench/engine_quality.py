"""Ranking quality of the two training engines under protocol 1 (docs/evaluation.md).

MovieLens-100K, the random protocol's five folds (``recsys evaluate --protocol random``'s
splits, same seed), one fixed configuration (the protocol-1 validation choice
``ML100K_TUNED`` unless overridden) fitted by implicit and by Spark MLlib ALS on each fold's
training part, both scored like serving (:class:`ALSRec`) on the same test part. No search:
the question is whether the engines agree on the same hyperparameters, not which is tuned
better. Spark runs in local mode, one session for all folds.

    python -m bench.engine_quality            # 5 folds
    python -m bench.engine_quality --quick    # 2 folds, 8 iterations (about a minute)

Ends with one JSON line: ``{"implicit": {"ndcg@10", ...}, "spark": {...},
"ndcg@10_difference": spark - implicit, "folds": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 of the 5 folds, 8 iterations")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="split seed (recsys evaluate's)")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--regularization", type=float, default=None)
    parser.add_argument("--spark-reg-param", type=float, default=None)
    parser.add_argument("--driver-memory", default="1g")
    args = parser.parse_args(argv)

    import numpy as np
    import scipy.sparse as sp
    from pyspark.sql import SparkSession
    from threadpoolctl import threadpool_limits

    from recsys_tools.data.movielens import load_ml100k
    from services.recommender.evaluation import event_log_from_movielens
    from services.recommender.evaluation.data import EventLog, offline_splits
    from services.recommender.evaluation.metrics import evaluate
    from services.recommender.evaluation.recommenders import ALSRec
    from services.recommender.spark_als import SparkALS, SparkSettings
    from services.recommender.training import (
        ML100K_TUNED,
        FactorEngine,
        TrainConfig,
        UserItemMatrix,
        train,
    )

    class EngineALSRec(ALSRec):
        """ALSRec with the engine chosen (scoring unchanged: the model's own user vectors)."""

        def __init__(self, config: TrainConfig, log_: EventLog, engine: FactorEngine) -> None:
            super().__init__(config, log_)
            self.engine = engine

        def fit(self, train_m: sp.csr_matrix) -> None:
            data = UserItemMatrix(train_m, self.log.user_ids, self.log.item_ids)
            self.model = train(
                data, self.config, items=self.log.item_meta, keep_history=False, engine=self.engine
            )

    params: dict[str, Any] = dict(ML100K_TUNED)
    if args.regularization is not None:
        params["regularization"] = args.regularization
    iterations = args.iterations or (8 if args.quick else None)
    if iterations:
        params["iterations"] = iterations
    config = TrainConfig().with_params(**params)
    log_ = event_log_from_movielens(load_ml100k())
    splits = offline_splits("random", log_, args.seed, args.folds)
    if args.quick:
        splits = splits[:2]
    load = os.getloadavg()
    print(f"load average at start: {load}; config {config.to_dict()}", file=sys.stderr)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("engine-quality")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    per_fold: dict[str, list[dict[str, float]]] = {"implicit": [], "spark": []}
    seconds: dict[str, float] = {"implicit": 0.0, "spark": 0.0}
    reg_params: list[float] = []
    try:
        with threadpool_limits(1, "blas"):
            for f, (train_idx, test_idx) in enumerate(splits):
                train_m = log_.matrix(train_idx)
                test_pos = log_.matrix(test_idx)
                for name in ("implicit", "spark"):
                    spark_engine = SparkALS(
                        SparkSettings(reg_param=args.spark_reg_param, shuffle_partitions=4)
                    )
                    engine: FactorEngine | None = spark_engine if name == "spark" else None
                    rec = EngineALSRec(config, log_, engine) if engine else ALSRec(config, log_)
                    started = time.perf_counter()
                    metrics = evaluate(rec, train_m, test_pos)
                    seconds[name] += time.perf_counter() - started
                    per_fold[name].append(metrics)
                    if engine is not None:
                        reg_params.append(float(spark_engine.params["reg_param"]))
                    print(f"fold {f + 1}/{len(splits)} {name}: {metrics}", file=sys.stderr)
    finally:
        spark.stop()
    result: dict[str, Any] = {}
    for name, rows in per_fold.items():
        keys = rows[0].keys()
        result[name] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
        result[name]["ndcg@10_std"] = round(float(np.std([r["ndcg@10"] for r in rows])), 4)
        result[name]["seconds"] = round(seconds[name], 1)
    diffs = [
        s["ndcg@10"] - i["ndcg@10"]
        for s, i in zip(per_fold["spark"], per_fold["implicit"], strict=True)
    ]
    result.update(
        {
            "ndcg@10_difference": round(float(np.mean(diffs)), 4),
            "ndcg@10_difference_per_fold": [round(d, 4) for d in diffs],
            "folds": len(splits),
            "config": {k: params[k] for k in sorted(params)},
            "spark_reg_param": [round(r, 4) for r in reg_params],
            "load_start": [round(x, 2) for x in load],
            "load_end": [round(x, 2) for x in os.getloadavg()],
        }
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
