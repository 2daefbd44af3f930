"""Training time and memory versus interactions: implicit ALS against Spark MLlib ALS.

Both engines get the same synthetic power-law matrix (:mod:`bench.train_synthetic`'s
generator: users and items Zipf-distributed, event-type weights, duplicates summed) and the
same ``TrainConfig``, and run the ``recsys train`` path (:func:`training.train` with the
engine). Each run is its own child process, so its peak memory is its own: the parent samples
the resident memory of the child's whole process tree (for Spark, the Python driver and its
JVM) and its CPU time. Spark runs in local mode (``local[2]``: the two cores of the small
nodes), the same cores implicit gets (``--threads 2``).

    python -m bench.train_engines            # 1M and 10M interactions
    python -m bench.train_engines --quick    # 200k interactions (about a minute)

Ends with one JSON line: ``{"implicit": {"interactions", "seconds", "peak_rss_mb", ...},
"spark": {...}, "sizes": [...]}``; the top-level entries are the largest size run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ENGINES = ("implicit", "spark")
# interactions → (users, items): ten interactions per user, a catalogue a tenth of the users
# (the shape of bench.train_synthetic's defaults).
FULL_SIZES = (1_000_000, 10_000_000)
QUICK_SIZES = (200_000,)


def shape_for(interactions: int) -> tuple[int, int]:
    users = max(interactions // 10, 100)
    return users, max(users // 10, 50)


def run_child(args: argparse.Namespace) -> int:
    """One fit in this process; prints its own timings as JSON for the parent."""
    import numpy as np

    from bench.train_synthetic import generate
    from services.recommender.training import FactorEngine, TrainConfig, UserItemMatrix, train
    from services.recommender.weights import WeightingConfig

    users, items = shape_for(args.interactions)
    matrix = generate(users, items, args.interactions, args.skew, args.seed)
    data = UserItemMatrix(matrix, [f"u{u}" for u in range(users)], [f"i{i}" for i in range(items)])
    config = TrainConfig(
        factors=args.factors,
        iterations=args.iterations,
        num_threads=args.threads,
        weighting=WeightingConfig(scheme="log", alpha=5.0),
        regularization=1.0,
    )
    engine: FactorEngine | None = None
    if args.child == "spark":
        from services.recommender.spark_als import SparkALS, SparkSettings

        engine = SparkALS(
            SparkSettings(master=f"local[{args.threads}]", driver_memory=args.driver_memory)
        )
    started = time.perf_counter()
    model = train(data, config, engine=engine, keep_history=False)
    seconds = time.perf_counter() - started
    finite = bool(np.isfinite(model.item_factors).all() and np.isfinite(model.user_factors).all())
    print(
        json.dumps(
            {
                "users": users,
                "items": items,
                "nnz": int(matrix.nnz),
                "seconds": round(seconds, 2),
                "fit_s": round(float(model.config["train_phases_s"]["fit_s"]), 2),
                "finite": finite,
                "engine_params": model.config.get("engine_params", {}),
            }
        )
    )
    return 0


def measure(engine: str, interactions: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child and sample its process tree: peak RSS and CPU seconds (all threads)."""
    import psutil

    cmd = [
        sys.executable, "-m", "bench.train_engines", "--child", engine,
        "--interactions", str(interactions), "--factors", str(args.factors),
        "--iterations", str(args.iterations), "--threads", str(args.threads),
        "--driver-memory", args.driver_memory, "--seed", str(args.seed),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                continue
        peak = max(peak, rss)
        time.sleep(0.1)
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        # A failed engine is a result too (the JSON line still comes): on a loaded machine
        # Spark's JVM can die while implicit's figures are fine.
        print(f"{engine} {interactions}: exited {proc.returncode}", file=sys.stderr)
        return {"interactions": interactions, "error": f"exited {proc.returncode}"}
    child = json.loads(out.strip().splitlines()[-1])
    result = {
        "interactions": interactions,
        "seconds": child["seconds"],
        "peak_rss_mb": round(peak / 2**20, 1),
        "cpu_s": round(sum(cpu.values()), 1),
        "process_wall_s": round(wall, 1),
        **{k: child[k] for k in ("users", "items", "nnz", "fit_s", "finite")},
    }
    if child.get("engine_params"):
        result["engine_params"] = child["engine_params"]
    print(f"{engine} {interactions}: {result}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k interactions only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="interactions")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="implicit threads, Spark cores")
    parser.add_argument("--driver-memory", default="4g", help="Spark local-mode driver memory")
    parser.add_argument("--skew", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--interactions", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    load = os.getloadavg()
    print(f"load average at start: {load}", file=sys.stderr)
    runs: list[dict[str, Any]] = []
    for n in sizes:
        row: dict[str, Any] = {"interactions": n}
        for engine in args.engines:
            row[engine] = measure(engine, n, args)
        implicit, spark = row.get("implicit"), row.get("spark")
        if implicit and spark and "error" not in implicit and "error" not in spark:
            row["spark_over_implicit_seconds"] = round(spark["seconds"] / implicit["seconds"], 2)
            row["spark_over_implicit_rss"] = round(
                spark["peak_rss_mb"] / implicit["peak_rss_mb"], 2
            )
        runs.append(row)
    result: dict[str, Any] = {engine: runs[-1][engine] for engine in args.engines}
    result.update(
        {
            "sizes": runs,
            "factors": args.factors,
            "iterations": args.iterations,
            "threads": args.threads,
            "load_start": [round(x, 2) for x in load],
            "load_end": [round(x, 2) for x in os.getloadavg()],
        }
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
