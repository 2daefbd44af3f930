"""Which ANN library serves the item factors: recall@10 against exact scoring and latency.

The recommender's scores are inner products of ALS factors, so every candidate runs with the
inner-product metric. Each library builds an index over the same synthetic ``--items`` ×
``--factors`` float32 factors (the shape ``bench.large_catalog`` serves), then answers the
same ``--queries`` user vectors for ``--fetch`` candidates each, one query at a time on one
thread (the way a request runs); the candidates are re-ranked exactly, as the recommender
does, and recall@10 is the share of the exact top 10 that re-ranking finds. Build time,
index bytes beyond the float32 factors, and per-query latency (median and p99) come with it.

    python -m bench.ann_libraries [--quick] [--items 1000000] [--libraries usearch faiss_hnsw]

Libraries that are not installed are skipped (named in the log). Ends with one JSON line,
one entry per library.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.recommender_common import log

Search = Callable[[np.ndarray, int], np.ndarray]


def _usearch(y: np.ndarray, work: Path, ef: int) -> tuple[Search, int]:
    from usearch.index import Index

    index = Index(ndim=y.shape[1], metric="ip", dtype="f16", connectivity=16,
                  expansion_add=128, expansion_search=ef)  # fmt: skip
    index.add(np.arange(y.shape[0], dtype=np.uint64), y, threads=os.cpu_count() or 1)
    path = work / "u.usearch"
    index.save(str(path))
    view = Index.restore(str(path), view=True, expansion_search=ef)
    assert view is not None

    def search(q: np.ndarray, n: int) -> np.ndarray:
        out: np.ndarray = view.search(q, n, threads=1).keys
        return out

    return search, path.stat().st_size


def _faiss_hnsw(y: np.ndarray, work: Path, ef: int) -> tuple[Search, int]:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(y.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.add(y)
    path = work / "f.faiss"
    faiss.write_index(index, str(path))
    index.hnsw.efSearch = ef
    faiss.omp_set_num_threads(1)

    def search(q: np.ndarray, n: int) -> np.ndarray:
        index.hnsw.efSearch = max(ef, n)
        out: np.ndarray = index.search(q[None, :], n)[1][0]
        return out

    return search, path.stat().st_size - y.nbytes


def _faiss_ivf(y: np.ndarray, work: Path, nprobe: int) -> tuple[Search, int]:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    nlist = int(4 * np.sqrt(y.shape[0]))
    quantizer = faiss.IndexFlatIP(y.shape[1])
    index = faiss.IndexIVFFlat(quantizer, y.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(y[rng.choice(y.shape[0], min(y.shape[0], 64 * nlist), replace=False)])
    index.add(y)
    path = work / "f.ivf"
    faiss.write_index(index, str(path))
    index.nprobe = nprobe
    faiss.omp_set_num_threads(1)

    def search(q: np.ndarray, n: int) -> np.ndarray:
        out: np.ndarray = index.search(q[None, :], n)[1][0]
        return out

    return search, path.stat().st_size - y.nbytes


LIBRARIES: dict[str, Callable[[np.ndarray, Path, int], tuple[Search, int]]] = {
    "usearch": _usearch,
    "faiss_hnsw": _faiss_hnsw,
    "faiss_ivf": _faiss_ivf,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 items, 100 queries")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--fetch", type=int, default=100, help="candidates re-ranked exactly")
    parser.add_argument("--effort", type=int, default=None,
                        help="HNSW expansion (ef) or IVF nprobe; default per library")  # fmt: skip
    parser.add_argument("--libraries", nargs="*", default=list(LIBRARIES))
    args = parser.parse_args(argv)
    n_items = args.items or (200_000 if args.quick else 1_000_000)
    n_queries = args.queries or (100 if args.quick else 300)
    rng = np.random.default_rng(7)
    f = args.factors
    y = (rng.standard_normal((n_items, f)) / np.sqrt(f)).astype(np.float32)
    # user vectors as fold-in makes them: combinations of a few dozen items' factors
    queries = np.stack([y[rng.choice(n_items, 30, replace=False)].sum(0) for _ in range(n_queries)])
    truth = [set(np.argsort(-(y @ q))[:10].tolist()) for q in queries]
    report: dict[str, Any] = {"items": n_items, "factors": f, "queries": n_queries,
                              "fetch": args.fetch, "cpus": os.cpu_count()}  # fmt: skip
    for name in args.libraries:
        effort = args.effort or (32 if name == "faiss_ivf" else 128)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-ann-") as tmp:
                started = time.perf_counter()
                cpu0 = time.process_time()
                search, index_bytes = LIBRARIES[name](y, Path(tmp), effort)
                build_s = time.perf_counter() - started
                build_cpu_s = time.process_time() - cpu0
                hits = 0
                lat: list[float] = []
                for q, best in zip(queries, truth, strict=True):
                    t0 = time.perf_counter()
                    cand = search(q, args.fetch)
                    cand = cand[cand >= 0].astype(np.int64)
                    top = cand[np.argsort(-(y[cand] @ q))[:10]]
                    lat.append((time.perf_counter() - t0) * 1000)
                    hits += len(best.intersection(top.tolist()))
        except ImportError as exc:
            log(f"{name}: not installed ({exc})")
            continue
        lat.sort()
        row = {
            "effort": effort,
            "recall@10": round(hits / (10 * n_queries), 4),
            "query_p50_ms": round(lat[len(lat) // 2], 3),
            "query_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
            "build_s": round(build_s, 1),
            "build_cpu_s": round(build_cpu_s, 1),
            "index_bytes_per_item": round(index_bytes / n_items, 1),
        }
        log(f"{name}: {row}")
        report[name] = row
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
