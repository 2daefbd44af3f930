"""Does the config ``recsys tune`` picks beat untuned ALS by ≥ 10% NDCG@10 and BM25 item-kNN,
under the issue-13 holdout protocol, on logs nobody tuned the tuner on?

For each log: ``recsys import``, ``recsys tune --time-budget B`` (searching on a validation
split of the training part only), then ``recsys evaluate --protocol holdout --config`` (the
test part, scored once), all through the real command line. Logs: MovieLens-100K (every
rating an interaction, no weight), and the two synthetic logs of ``recsys data synth``
(``retail``: sessions, event types, complements, repeats; ``lowrank``: a movie-like latent
factor log); recsys_tools/data/synthetic_logs.py documents their structure.

    python -m bench.tune_quality            # budget 120 s a log
    python -m bench.tune_quality --quick    # budget 30 s a log (about two and a half minutes)

Ends with one JSON line: per log, each model's ``ndcg@10``, the tuned family, and the ratios
``tuned_vs_als_untuned`` and ``tuned_vs_item_knn`` (tuned NDCG@10 over theirs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

log = logging.getLogger("bench.tune_quality")


def _run(argv: list[str]) -> dict[str, Any]:
    """One ``recsys`` command in process; its last JSON line."""
    from recsys_tools.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"recsys {' '.join(argv)} exited {rc}")
    line = [x for x in out.getvalue().splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def logs(workdir: Path) -> dict[str, tuple[Path, str]]:
    """(raw file, --columns) per log; the synthetic ones are generated here, seeded."""
    from recsys_tools.data import synthetic_logs
    from recsys_tools.data.fetch import fetch

    ml = fetch(["ml-100k"], progress=False)["ml-100k"] / "ml-100k.inter"
    retail = workdir / "retail.csv"
    synthetic_logs.retail(retail, seed=0)
    lowrank = workdir / "lowrank.csv"
    synthetic_logs.lowrank(lowrank, seed=0)
    return {
        "ml-100k": (ml, "user=user_id:token,item=item_id:token,time=timestamp:float"),
        "retail": (retail, synthetic_logs.COLUMNS["retail"]),
        "lowrank": (lowrank, synthetic_logs.COLUMNS["lowrank"]),
    }


def measure(name: str, raw: Path, columns: str, budget: float, workdir: Path) -> dict[str, Any]:
    norm = workdir / f"{name}.norm.csv"
    config = workdir / f"{name}.config.json"
    _run(["import", "interactions", str(raw), "--columns", columns, "--out", str(norm),
          "--no-progress"])  # fmt: skip
    started = time.monotonic()
    tuned = _run(["tune", "--data", str(norm), "--time-budget", str(budget), "--out", str(config),
                  "--no-progress"])  # fmt: skip
    tune_s = time.monotonic() - started
    result = _run(["evaluate", "--data", str(norm), "--protocol", "holdout", "--config",
                   str(config), "--no-progress"])  # fmt: skip
    models = result["models"]
    ndcg = {k: v["ndcg@10"] for k, v in models.items()}
    out = {
        "users": result["users"],
        "family": tuned["family"],
        "params": tuned["params"],
        "trials": tuned["trials"],
        "tune_s": round(tune_s, 1),
        "ndcg@10": ndcg,
        "tuned_vs_als_untuned": ndcg["tuned"] / ndcg["als_untuned"],
        "tuned_vs_item_knn": ndcg["tuned"] / ndcg["item_knn"],
    }
    log.info("%s: %s", name, json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Reading ML-100K and cutting its splits alone took 12 s at a load average of 50.
    p.add_argument("--quick", action="store_true", help="30 s tuning budget a log")
    p.add_argument("--budget", type=float, default=None, help="tuning budget a log, seconds")
    p.add_argument("--logs", default="ml-100k,retail,lowrank")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    budget = args.budget or (30.0 if args.quick else 120.0)
    results: dict[str, Any] = {"budget_s": budget, "load_avg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        available = logs(workdir)
        for name in args.logs.split(","):
            raw, columns = available[name]
            results[name] = measure(name, raw, columns, budget, workdir)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
