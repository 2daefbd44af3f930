"""Training cost at scale: ALS on a synthetic power-law interaction matrix.

Real click streams are heavy-tailed on both sides (a few users and items account for most
events), which is what makes ALS's per-user solves uneven; so users and items are drawn from
Zipf-like distributions (exponent ``--skew``) and each event gets an event-type weight
(view/click/add-to-cart/purchase). Duplicated (user, item) pairs are summed, as the events
service accumulates them.

Measured: matrix build, ALS fit (weighting + implicit CPU ALS, the ``recsys train`` path),
publishing the artifact, loading it back (memory-mapped) and the process's peak RSS.

    python -m bench.train_synthetic            # 1M users × 100k items × 10M events
    python -m bench.train_synthetic --quick    # 100k × 10k × 1M (about a minute)

Ends with one JSON line: users, items, interactions, nnz, train_s, peak_rss_mb, ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp


def power_law_probs(n: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """P(rank r) ∝ r^-skew, ranks shuffled over ids so popularity is not sorted by id."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -skew
    p /= p.sum()
    out: np.ndarray = p[rng.permutation(n)]
    return out


def generate(n_users: int, n_items: int, n_events: int, skew: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    users = np.empty(n_events, dtype=np.int32)
    items = np.empty(n_events, dtype=np.int32)
    pu = np.cumsum(power_law_probs(n_users, skew, rng))
    pi = np.cumsum(power_law_probs(n_items, skew, rng))
    weights = np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32)[
        rng.choice(4, size=n_events, p=[0.7, 0.2, 0.07, 0.03])
    ]
    chunk = 2_000_000  # bounded temporaries
    for lo in range(0, n_events, chunk):
        n = min(chunk, n_events - lo)
        users[lo : lo + n] = np.minimum(np.searchsorted(pu, rng.random(n)), n_users - 1)
        items[lo : lo + n] = np.minimum(np.searchsorted(pi, rng.random(n)), n_items - 1)
    m = sp.csr_matrix((weights, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    m.sum_duplicates()
    return m


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k users × 10k items × 1M")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--skew", type=float, default=0.8, help="Zipf exponent")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-save", action="store_true", help="skip publish + load")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.interactions = 100_000, 10_000, 1_000_000

    from services.recommender.model import Model
    from services.recommender.training import TrainConfig, UserItemMatrix, train
    from services.recommender.weights import WeightingConfig

    t0 = time.perf_counter()
    matrix = generate(args.users, args.items, args.interactions, args.skew, args.seed)
    gen_s = time.perf_counter() - t0
    print(f"generated {matrix.shape} nnz={matrix.nnz} in {gen_s:.1f}s", file=sys.stderr)
    data = UserItemMatrix(
        matrix, [f"u{u}" for u in range(args.users)], [f"i{i}" for i in range(args.items)]
    )
    config = TrainConfig(
        factors=args.factors,
        iterations=args.iterations,
        num_threads=args.threads,
        weighting=WeightingConfig(scheme="log", alpha=5.0),
        regularization=1.0,
    )
    t0 = time.perf_counter()
    model = train(data, config, show_progress=sys.stderr.isatty())
    train_s = time.perf_counter() - t0
    fit_s = float(model.config["train_s"])
    result: dict[str, object] = {
        "users": args.users,
        "items": args.items,
        "interactions": args.interactions,
        "nnz": int(matrix.nnz),
        "factors": args.factors,
        "iterations": args.iterations,
        "threads": args.threads,
        "generate_s": round(gen_s, 2),
        "train_s": round(fit_s, 2),
        "train_with_model_build_s": round(train_s, 2),
    }
    if not args.no_save:
        with tempfile.TemporaryDirectory() as store:
            t0 = time.perf_counter()
            model.save(store)
            result["save_s"] = round(time.perf_counter() - t0, 2)
            del model
            t0 = time.perf_counter()
            loaded = Model.load(store)
            result["load_s"] = round(time.perf_counter() - t0, 2)
            result["load_item_factors_mmap"] = isinstance(loaded.item_factors, np.memmap)
            vec = loaded.recalculate_user({"i1": 2.0, "i2": 1.0})
            t0 = time.perf_counter()
            for _ in range(20):
                loaded.recommend(None, {"i1": 2.0, "i2": 1.0}, 10, with_reasons=False)
            result["recommend_ms"] = round((time.perf_counter() - t0) / 20 * 1000, 2)
            del loaded, vec
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
