"""Recommend over a million-item catalog: throughput, tail latency and recall of the ANN path.

A synthetic ``--items`` × ``--factors`` model (``bench.recommender_common.synthetic_model``:
random factors, 20 categories of 5% each, 5,000 users with 20 training items and 10 live
clicks in a real redis-server) is published with its ANN index (built at publish time, as
``recsys train`` does) and served by the real server (``python -m services.recommender``,
``WORKERS`` processes) with its default ANN settings, but ``ANN_MIN_ITEMS`` set to the
catalog size, so that a smaller ``--items`` takes the index path too. ghz drives
``Recommend`` exactly as in ``bench.recommend_load``: Recommend and the no-op handler
(``RECOMMENDER_NOOP=1``, the same stack answering without touching a model; it serves a
small model, since it never reads one) alternate ``--rounds`` times at fixed concurrency,
then each runs at half its maximum rate.

Recall: for ``--sample`` users, the server's answer (through gRPC, so with the live state the
server read) against exact scoring of the same user in this process (the same service code
and Redis state, with the index turned off): the share of the exact top 10 the server
returned, averaged over users. ``filtered_recall@10`` is the same with a category filter that
keeps 5% of the catalog. A filter that narrow is scored exactly by default
(``ANN_EXACT_BELOW``); ``filtered_recall@10_ann`` forces it through the index instead (a
second server with ``ANN_EXACT_BELOW=0``), to show what the over-fetch alone gives.

The model and its index are cached under ``~/.cache/recsys/bench`` (keyed by size and seed):
the first run builds them (a few minutes on two cores), later runs load them.

    python -m bench.large_catalog [--quick] [--items 1000000] [--factors 64] [--sample 200]

Ends with one JSON line: items, factors, qps, ratio, p99_ms_at_half_load, recall@10,
filtered_recall@10, library, and the details next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.recommend_load import Driver
from bench.recommender_common import (
    log,
    recommender,
    redis_endpoint,
    seed_synthetic_state,
    synthetic_model,
)

PREFIX = "bench-large-catalog"
CACHE = Path.home() / ".cache" / "recsys" / "bench"
N_USERS = 5000
FILTER = "g3"  # one of the synthetic model's 20 categories: 5% of the catalog


def cached_model(n_items: int, factors: int) -> Path:
    """The synthetic model's store, built (with its index) once per size and code version."""
    from services.recommender import ann, artifact

    store = CACHE / f"large-catalog-{n_items}x{factors}-{ann.LIBRARY}"
    if artifact.current_version(store) is not None:
        log(f"using the cached model in {store}")
        return store
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    tmp = store.with_name(store.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"building the {n_items}-item model and its index (once; cached in {store})")
    synthetic_model(tmp, n_items, n_users=N_USERS, factors=factors, index_min_items=1)
    os.replace(tmp, store)
    log(f"model and index built in {time.perf_counter() - started:.0f}s")
    return store


def recall(
    targets: dict[str, str],
    store: Path,
    redis_url: str,
    users: list[str],
    categories: tuple[str, ...],
) -> dict[str, float]:
    """Mean recall@10 of each server's answers against exact scoring, per target name."""
    import grpc

    from recsys.recommender.v1 import recommender_pb2 as pb
    from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
    from recsys.redis_io import make_redis
    from recsys.store import KeySchema
    from recsys.store.redis_store import RedisFeatureStore
    from services.recommender.model import Model
    from services.recommender.service import (
        Limits,
        RecommenderService,
        RecommendQuery,
        StateReader,
        make_filters,
    )

    model = Model.load(store)
    model.index = None  # the reference: every item scored
    state = RedisFeatureStore(make_redis(redis_url), KeySchema(PREFIX))
    exact = RecommenderService(lambda: model, StateReader(state), Limits())
    filters = make_filters(categories=categories)
    out: dict[str, float] = {}
    for name, target in targets.items():
        hits = 0
        total = 0
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.RecommenderServiceStub(channel)
            for user in users:
                request = pb.RecommendRequest(
                    user_id=user, k=10, filters=pb.Filters(categories=categories)
                )
                served = {i.item_id for i in stub.Recommend(request, timeout=10).items}
                truth = exact.recommend(RecommendQuery(user, 10, filters))
                want = {i.item_id for i in truth.items}
                hits += len(want & served)
                total += len(want)
        out[name] = round(hits / max(total, 1), 4)
    state.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--sample", type=int, default=None, help="users checked for recall")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--ghz-cpus", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--python-client", action="store_true", help="force the fallback")
    args = parser.parse_args(argv)
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    args.warmup = args.warmup or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.sample = args.sample or (100 if args.quick else 300)
    from services.recommender import ann

    driver = Driver(args)
    store = cached_model(args.items, args.factors)
    # the index path at any --items (the server's default threshold is ANN_MIN_ITEMS)
    server_env = {"WORKERS": str(args.workers), "TRENDING_CACHE_S": "1",
                  "ANN_MIN_ITEMS": str(args.items)}  # fmt: skip
    users = [f"u{n}" for n in range(N_USERS)]
    template = {"user_id": f"u{{{{randomInt 0 {N_USERS}}}}}", "k": 10}
    report: dict[str, Any] = {"workers": args.workers, "concurrency": args.concurrency,
                              "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-large-catalog-") as tmp:
        work = Path(tmp)
        small = work / "small-store"
        synthetic_model(small, 1000, n_users=10, factors=args.factors)
        with redis_endpoint(work / "redis") as redis_url:
            seed_synthetic_state(redis_url, PREFIX, N_USERS, args.items)
            rng = np.random.default_rng(11)
            sample = [users[int(u)] for u in rng.choice(N_USERS, args.sample, replace=False)]
            with (
                recommender(store, redis_url, PREFIX, work, **server_env) as srv,
                recommender(store, redis_url, PREFIX, work, ANN_EXACT_BELOW="0",
                            **server_env) as forced,
            ):  # fmt: skip
                log("recall against exact scoring")
                unfiltered = recall({"ann": srv.target}, store, redis_url, sample, ())
                filtered = recall({"default": srv.target, "ann": forced.target}, store,
                                  redis_url, sample, (FILTER,))  # fmt: skip
                log(f"  recall@10 {unfiltered}, filtered {filtered}")
            with (
                recommender(store, redis_url, PREFIX, work, **server_env) as srv,
                recommender(small, redis_url, PREFIX, work, RECOMMENDER_NOOP="1",
                            **server_env) as noop_srv,
            ):  # fmt: skip
                log(f"{args.items}-item Recommend vs the no-op handler on the same stack")
                rec, noop = driver.compare(srv.target, noop_srv.target, users, template)
                log("with the 5% category filter")
                narrow = {**template, "filters": {"categories": [FILTER]}}
                filt = driver.measure(srv.target, users, narrow)
    report.update({"recommend": rec, "noop": noop, "filtered": filt,
                   "loadavg_end": os.getloadavg()})  # fmt: skip
    qps = rec["max"]["qps"]
    noop_qps = noop["max"]["qps"]
    headline = {
        "items": args.items,
        "factors": args.factors,
        "qps": qps,
        "noop_qps": noop_qps,
        "ratio": round(qps / noop_qps, 3) if noop_qps else None,
        "p99_ms_at_half_load": rec["half"]["p99_ms"],
        "noop_p99_ms_at_half_load": noop["half"]["p99_ms"],
        "filtered_qps": filt["max"]["qps"],
        "filtered_p99_ms_at_half_load": filt["half"]["p99_ms"],
        "recall@10": unfiltered["ann"],
        "filtered_recall@10": filtered["default"],
        "filtered_recall@10_ann": filtered["ann"],
        "library": ann.LIBRARY,
    }
    log("details: " + json.dumps(report))
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
