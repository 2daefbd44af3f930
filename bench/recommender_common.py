"""Shared pieces of the recommender benchmarks: models, Redis state, the server process, ghz.

The server is always the real one (``python -m services.recommender``) in its own
process(es), configured only through its environment, so the benchmarks measure what a
deployment runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys_tools.harness import Service, free_port, wait_serving

ROOT = Path(__file__).resolve().parents[1]
GHZ_VERSION = "v0.121.0"
GHZ_MODULE = f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"
TOOLS = Path.home() / ".cache" / "recsys" / "tools"
PROTO = "recsys/recommender/v1/recommender.proto"
RECOMMEND = "recsys.recommender.v1.RecommenderService.Recommend"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- ghz
def ensure_ghz() -> str | None:
    """Path to ghz: on PATH, in the tools cache, or built now with ``go install`` (None: no Go)."""
    found = shutil.which("ghz")
    if found:
        return found
    cached = TOOLS / "ghz"
    if cached.is_file():
        return str(cached)
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file()
                                else None)  # fmt: skip
    if go is None:
        return None
    TOOLS.mkdir(parents=True, exist_ok=True)
    log(f"building ghz {GHZ_VERSION} with go install (one-off, a few minutes)")
    env = {**os.environ, "GOBIN": str(TOOLS)}
    done = subprocess.run([go, "install", GHZ_MODULE], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not cached.is_file():
        log(f"go install failed: {done.stderr[-2000:]}")
        return None
    return str(cached)


@dataclass
class LoadResult:
    tool: str
    count: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int]
    # with ``settle_s``: the percentiles above leave out the run's first seconds (the
    # client's connection set-up); this is the p99 over every request, start included
    p99_with_start_ms: float | None = None

    def summary(self) -> dict[str, Any]:
        out = {
            "tool": self.tool,
            "requests": self.count,
            "qps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
        }
        if self.p99_with_start_ms is not None:
            out["p99_with_start_ms"] = round(self.p99_with_start_ms, 3)
        return out


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted latencies; NaN for none."""
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def settled_latencies(details: list[dict[str, Any]], settle_s: float) -> list[float]:
    """Latencies (ms, sorted) of the OK requests sent ``settle_s`` or more after the first.

    Every ghz run opens fresh connections, and in its first fraction of a second requests
    queue behind the HTTP/2 set-up, far slower than after it (measured: docs/benchmarks.md,
    History, "Where the half-load tail came from"). A frontend keeps its channels open, so
    the steady-state figure is the one a capacity plan needs; callers report the whole-run
    p99 next to it.
    """
    stamped = [
        (datetime.fromisoformat(d["timestamp"]).timestamp(), d["latency"] / 1e6)
        for d in details
        if d.get("status") == "OK"
    ]
    if not stamped:
        return []
    start = min(t for t, _ in stamped)
    return sorted(ms for t, ms in stamped if t >= start + settle_s)


def ghz_report(
    ghz: str,
    target: str,
    data: dict[str, Any],
    *,
    concurrency: int,
    connections: int,
    duration_s: float,
    rps: int = 0,
    cpus: int = 1,
    call: str = RECOMMEND,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One ghz run's JSON report (with per-request ``details``); ``rps=0``: unpaced;
    ``metadata`` is sent with every call (the bearer token of an auth run)."""
    args = [
        ghz, "--insecure", "--proto", str(ROOT / "protos" / PROTO),
        "--import-paths", str(ROOT / "protos"), "--call", call,
        "-d", json.dumps(data), "-c", str(concurrency), "--connections", str(connections),
        "-z", f"{duration_s}s", "--cpus", str(cpus), "--timeout", "5s", "--format", "json",
    ]  # fmt: skip
    if rps:
        args += ["--rps", str(rps)]
    if metadata:
        args += ["--metadata", json.dumps(metadata)]
    # ghz shares the two cores with the server: a tenth as many Go GC cycles (its heap is
    # small) takes them out of the measured tail (docs/benchmarks.md, History, "Where the
    # half-load tail came from")
    env = {**os.environ, "GOGC": os.environ.get("GHZ_GOGC", "1000")}
    done = subprocess.run([*args, target], capture_output=True, text=True, check=False, env=env)
    if "panic: send on closed channel" in done.stderr:
        # ghz 0.121's own race between its workers and the end of a timed run (seen on a
        # 2-core machine at a load average of 40): the run says nothing about the server,
        # so it is run again once
        log("  ghz panicked at the end of its run (its own race); running it again")
        done = subprocess.run([*args, target], capture_output=True, text=True, check=False,
                              env=env)  # fmt: skip
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    detail = report.get("errorDistribution") or {}
    if detail:
        log(f"  ghz errors (c={concurrency}): {dict(list(detail.items())[:3])}")
    return report


def ghz_status_counts(report: dict[str, Any]) -> dict[str, int]:
    """Status counts of a ghz report, the calls ghz itself cut at its deadline apart.

    ghz stops at the deadline by closing its connections: the requests in flight then (at
    most -c of them) fail "transport is closing"; they are not answers of the server, so
    they are counted as ``cut_at_end`` instead of ``Unavailable`` / ``Canceled``.
    """
    codes = dict(report.get("statusCodeDistribution") or {})
    closing = sum(n for msg, n in (report.get("errorDistribution") or {}).items()
                  if "closing" in msg or "canceled" in msg or "closed network" in msg)  # fmt: skip
    if closing and codes.get("Unavailable", 0) + codes.get("Canceled", 0) >= closing:
        for code in ("Unavailable", "Canceled"):
            take = min(codes.get(code, 0), closing)
            if take:
                codes[code] -= take
                closing -= take
                codes["cut_at_end"] = codes.get("cut_at_end", 0) + take
                if not codes[code]:
                    del codes[code]
    return codes


def ghz_load_result(report: dict[str, Any], settle_s: float = 0.0) -> LoadResult:
    """A ghz report as a :class:`LoadResult`.

    ``settle_s`` > 0: the latency percentiles count only the requests sent ``settle_s`` or
    more after the first (see :func:`settled_latencies`); the run should last that much
    longer. The whole-run p99 is kept as ``p99_with_start_ms``."""
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    errors = {k: v for k, v in ghz_status_counts(report).items() if k != "OK"}
    if settle_s > 0:
        steady = settled_latencies(report.get("details") or [], settle_s)
        return LoadResult("ghz", int(report["count"]), float(report["rps"]),
                          percentile(steady, 0.50), percentile(steady, 0.90),
                          percentile(steady, 0.99), errors,
                          p99_with_start_ms=lat.get(99, float("nan")))  # fmt: skip
    return LoadResult("ghz", int(report["count"]), float(report["rps"]),
                      lat.get(50, float("nan")), lat.get(90, float("nan")),
                      lat.get(99, float("nan")), errors)  # fmt: skip


# ------------------------------------------------------------------------------ Redis
@contextmanager
def redis_endpoint(work_dir: Path) -> Iterator[str]:
    """``REDIS_URL`` if set, else a private redis-server stopped on exit."""
    from recsys_tools.infra.launcher import start_redis

    endpoint = start_redis(work_dir, appendonly=False)
    try:
        yield endpoint.url
    finally:
        if endpoint.server is not None:
            endpoint.server.stop()


# ----------------------------------------------------------------------------- models
@dataclass
class Ml100k:
    log: Any  # services.recommender.evaluation.EventLog
    train_idx: np.ndarray
    rest_idx: np.ndarray


def ml100k_split(train_frac: float) -> Ml100k:
    from recsys_tools.data.movielens import load_ml100k
    from services.recommender.evaluation.data import event_log_from_movielens, time_split

    log_ = event_log_from_movielens(load_ml100k())
    train_idx, rest_idx = time_split(np.arange(len(log_)), train_frac)
    return Ml100k(log_, train_idx, rest_idx)


def train_ml100k(data: Ml100k, store: Path, config: Any = None) -> str:
    """ALS on the training part, published into ``store``; returns the version."""
    from services.recommender.training import TrainConfig, UserItemMatrix, train

    matrix = data.log.matrix(data.train_idx)
    model = train(UserItemMatrix(matrix, data.log.user_ids, data.log.item_ids),
                  config or TrainConfig(), items=data.log.item_meta)  # fmt: skip
    return model.save(store)


def synthetic_model(store: Path, n_items: int, *, n_users: int = 5000, factors: int = 64,
                    history: int = 20, seed: int = 7,
                    index_min_items: int | None = None) -> str:  # fmt: skip
    """A random-factor model of ``n_items`` items (serving cost does not depend on how the
    factors were fitted, only on their shape); users have ``history`` training items each.
    Published with an ANN index from ``index_min_items`` items (default: the publish
    default, ``ann.DEFAULT_MIN_ITEMS``)."""
    from services.recommender.ann import DEFAULT_MIN_ITEMS
    from services.recommender.model import ItemMeta, Model
    from services.recommender.weights import Weighting, WeightingConfig

    rng = np.random.default_rng(seed)
    item_factors = (rng.standard_normal((n_items, factors)) / np.sqrt(factors)).astype(np.float32)
    user_factors = (rng.standard_normal((n_users, factors)) / np.sqrt(factors)).astype(np.float32)
    popularity = np.floor(1000 * rng.pareto(1.2, n_items)).astype(np.float32)
    indices = np.concatenate([rng.choice(n_items, history, replace=False) for _ in range(n_users)])
    indptr = np.arange(0, n_users * history + 1, history, dtype=np.int64)
    data = np.full(len(indices), 2.0, dtype=np.float32)
    genres = [f"g{g}" for g in range(20)]
    item_ids = [f"i{n}" for n in range(n_items)]
    meta = {i: ItemMeta(i, genres=(genres[n % 20],)) for n, i in enumerate(item_ids)}
    model = Model(
        version=_version(),
        item_ids=item_ids,
        user_ids=[f"u{n}" for n in range(n_users)],
        item_factors=item_factors,
        user_factors=user_factors,
        regularization=0.05,
        weighting=Weighting(WeightingConfig(scheme="none"), np.ones(n_items, np.float32), n_items),
        item_popularity=popularity,
        history=(indptr, indices.astype(np.int32), data),
        items=meta,
    )
    return model.save(store, index_min_items=index_min_items or DEFAULT_MIN_ITEMS)


def _version() -> str:
    from services.recommender.artifact import new_version_id

    return new_version_id()


def seed_synthetic_state(redis_url: str, prefix: str, n_users: int, n_items: int,
                         clicks: int = 10, seed: int = 8) -> None:  # fmt: skip
    """Live clicks in Redis for every synthetic user (what the events service would write)."""
    from recsys.redis_io import make_redis
    from recsys.store import FeatureEvent, KeySchema
    from recsys.store.redis_store import RedisFeatureStore

    rng = np.random.default_rng(seed)
    store = RedisFeatureStore(make_redis(redis_url), KeySchema(prefix))
    now = time.time()
    batch: list[FeatureEvent] = []
    for u in range(n_users):
        for item in rng.choice(n_items, clicks, replace=False):
            batch.append(FeatureEvent(f"s{u}-{item}", f"u{u}", f"i{item}", "click", 2.0, now))
        if len(batch) >= 2000:
            store.apply_events(batch, now)
            batch = []
    if batch:
        store.apply_events(batch, now)
    store.close()


def seed_ml100k_state(redis_url: str, prefix: str, data: Ml100k) -> int:
    """The events after the training cut, applied as rating events (weight = rating)."""
    from recsys.redis_io import make_redis
    from recsys.store import FeatureEvent, KeySchema
    from recsys.store.redis_store import RedisFeatureStore

    store = RedisFeatureStore(make_redis(redis_url), KeySchema(prefix))
    lg = data.log
    batch: list[FeatureEvent] = []
    for e in data.rest_idx:
        batch.append(FeatureEvent(f"ml-{int(e)}", lg.user_ids[int(lg.users[e])],
                                  lg.item_ids[int(lg.items[e])], "rating",
                                  float(lg.ratings[e]), float(lg.timestamps[e])))  # fmt: skip
        if len(batch) >= 2000:
            store.apply_events(batch)
            batch = []
    if batch:
        store.apply_events(batch)
    store.close()
    return len(data.rest_idx)


# ----------------------------------------------------------------------------- server
@contextmanager
def recommender(model_dir: Path, redis_url: str, prefix: str, work_dir: Path,
                **env: str) -> Iterator[Service]:  # fmt: skip
    """``python -m services.recommender`` with the given environment, once every worker
    serves; SIGTERM on exit."""
    port = free_port()
    server = Service("recommender", ["services.recommender"], {
        "RECSYS_MODEL_DIR": str(model_dir),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "GRPC_HOST": "127.0.0.1",
        "LOG_LEVEL": "info",
        "GRACE_S": "2",
        **env,
    }, log_path=work_dir / f"recommender-{port}.log", port=port)  # fmt: skip
    server.start()
    try:
        wait_serving(server, 120)
        # health answers from whichever worker got the connection: wait for all of them
        workers = int((server.env or {}).get("WORKERS", "1") or "1")
        server.wait_ready(lambda: server.log_count('"recommender serving"') >= workers,
                          timeout_s=120, what=f"{workers} workers serving")  # fmt: skip
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ Kafka + events service
@contextmanager
def kafka_endpoint(work_dir: Path) -> Iterator[Any]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else Apache Kafka when java is available, else
    the embedded Tansu broker (same choice as the test fixtures); stopped on exit."""
    from recsys_tools.infra.apache_kafka import jars_present, kafka_version
    from recsys_tools.infra.launcher import resolve_kafka_kind, start_kafka

    env = dict(os.environ)
    kind = resolve_kafka_kind(env, jars_cached=jars_present(kafka_version(env), env))
    endpoint = start_kafka(kind, work_dir)
    log(f"kafka: {endpoint.description} at {endpoint.bootstrap}")
    try:
        yield endpoint
    finally:
        if endpoint.server is not None:
            endpoint.server.stop()


def applied_events(client: Any, prefix: str) -> int:
    """Events the events service has applied under ``prefix`` (its counters hash)."""
    from recsys.store import KeySchema

    return sum(int(v) for v in client.hvals(KeySchema(prefix).counters()))
