"""Recommend over HTTP/JSON against Recommend over gRPC: the same server, the same run.

One real recommender (``python -m services.recommender``, ``WORKERS`` processes sharing both
ports, ML-100K model, live user state in a real redis-server) serves gRPC and HTTP/JSON on
the same event loop per worker. Two compiled Go load generators drive it, measured the same
way:

- gRPC: ghz (as ``bench.recommend_load``), ``-c`` concurrent calls over ``--connections``;
- HTTP: vegeta (``go install``, as ghz), ``-max-workers`` = the same concurrency, keep-alive
  connections, bodies the protobuf JSON of the same requests over the same random users.

1. the maximum rate of each, alternating gRPC and HTTP for ``--rounds`` rounds (median kept),
   so background load on the shared machine weighs on both alike;
2. the latency at half of each one's own maximum, paced, with the first ``--settle`` seconds
   (connection set-up) left out of the percentiles, as ``bench.recommend_load`` does.

Server CPU seconds per 1,000 requests (the recommender's processes, from psutil) are
reported next to each rate.

    python -m bench.http_load [--quick] [--concurrency 16] [--connections 16] [--rounds 3]

Ends with one JSON line: grpc_qps, http_qps, qps_ratio (HTTP / gRPC),
grpc_p99_ms_at_half_load, http_p99_ms_at_half_load, p99_ratio (HTTP / gRPC).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.recommender_common import (
    TOOLS,
    LoadResult,
    ensure_ghz,
    ghz_load_result,
    ghz_report,
    log,
    ml100k_split,
    percentile,
    recommender,
    redis_endpoint,
    seed_ml100k_state,
    train_ml100k,
)
from recsys_tools.harness import free_port

PREFIX = "bench-http"
VEGETA_VERSION = "v12.13.0"
VEGETA_MODULE = f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}"
RECOMMEND_PATH = "/v1/recommender:recommend"


def ensure_vegeta() -> str:
    """Path to vegeta: on PATH, in the tools cache, or built now with ``go install``."""
    found = shutil.which("vegeta")
    if found:
        return found
    cached = TOOLS / "vegeta"
    if cached.is_file():
        return str(cached)
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file()
                                else None)  # fmt: skip
    if go is None:
        raise SystemExit("vegeta is not installed and Go is not available to build it")
    TOOLS.mkdir(parents=True, exist_ok=True)
    log(f"building vegeta {VEGETA_VERSION} with go install (one-off)")
    env = {**os.environ, "GOBIN": str(TOOLS)}
    done = subprocess.run([go, "install", VEGETA_MODULE], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0 or not cached.is_file():
        raise SystemExit(f"go install {VEGETA_MODULE} failed: {done.stderr[-2000:]}")
    return str(cached)


def vegeta_targets(path: Path, url: str, users: list[str], k: int) -> None:
    """vegeta's JSON target format, one Recommend per user in a random order (vegeta cycles
    through them), as ghz's ``randomInt`` user ids spread its calls."""
    order = list(users)
    random.Random(7).shuffle(order)
    with path.open("w") as out:
        for user in order:
            body = json.dumps({"userId": user, "k": k}).encode()
            out.write(json.dumps({
                "method": "POST", "url": url, "body": base64.b64encode(body).decode(),
                "header": {"Content-Type": ["application/json"]},
            }) + "\n")  # fmt: skip


def vegeta_run(vegeta: str, targets: Path, *, concurrency: int, duration_s: float,
               rate: int = 0, settle_s: float = 0.0) -> LoadResult:  # fmt: skip
    """One vegeta attack; ``rate=0``: unpaced, ``concurrency`` requests in flight at most.

    The percentiles come from the per-request results (``vegeta encode --to csv``), so the
    settle window is cut the same way as ghz's ``details``."""
    args = [vegeta, "attack", "-format", "json", "-targets", str(targets),
            "-duration", f"{duration_s}s", "-timeout", "5s", "-keepalive",
            "-max-workers", str(concurrency), "-workers", str(concurrency),
            "-rate", f"{rate}/s" if rate else "0"]  # fmt: skip
    env = {**os.environ, "GOGC": os.environ.get("GHZ_GOGC", "1000")}  # as for ghz
    attack = subprocess.run(args, capture_output=True, check=False, env=env)
    if attack.returncode != 0:
        raise RuntimeError(f"vegeta attack failed: {attack.stderr.decode()[-2000:]}")
    encoded = subprocess.run([vegeta, "encode", "--to", "csv"], input=attack.stdout,
                             capture_output=True, check=True)  # fmt: skip
    rows = list(csv.reader(encoded.stdout.decode().splitlines()))
    stamped = [(int(r[0]) / 1e9, int(r[1]), int(r[2]) / 1e6) for r in rows if r]
    if not stamped:
        raise RuntimeError("vegeta recorded no request")
    errors: dict[str, int] = {}
    for _, code, _ in stamped:
        if code != 200:
            errors[str(code)] = errors.get(str(code), 0) + 1
    start = min(t for t, _, _ in stamped)
    ends = [t + ms / 1000 for t, _, ms in stamped]
    wall = max(ends) - start
    everything = sorted(ms for _, code, ms in stamped if code == 200)
    steady = sorted(ms for t, code, ms in stamped if code == 200 and t >= start + settle_s)
    ok = len(everything)
    return LoadResult(
        "vegeta",
        len(stamped),
        ok / wall if wall > 0 else 0.0,
        percentile(steady, 0.5),
        percentile(steady, 0.9),
        percentile(steady, 0.99),
        errors,
        p99_with_start_ms=percentile(everything, 0.99) if settle_s else None,
    )


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (the recommender's workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def children_cpu_s() -> float:
    """CPU seconds of this process' finished children: the load generator's runs (the
    server, still running, is not among them until it exits)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(pid: int, run: Callable[[], LoadResult]) -> dict[str, Any]:
    """The run's summary plus the server's and the load generator's CPU ms per request.

    On a machine whose cores the client and the server share, a client that needs more CPU
    per request leaves less to the server: the two figures tell a slower transport from a
    heavier load generator."""
    before, client_before = process_cpu_s(pid), children_cpu_s()
    result = run()
    cpu, client = process_cpu_s(pid) - before, children_cpu_s() - client_before
    out = result.summary()
    n = result.count or 1
    out["server_cpu_ms_per_request"] = round(1000 * cpu / n, 4)
    out["client_cpu_ms_per_request"] = round(1000 * client / n, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds at the start of each half-load run left out of its "
                        "percentiles (connection set-up)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=16, help="ghz's HTTP/2 connections")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--ghz-cpus", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (2 / 3)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    args.warmup = args.warmup or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    ghz = ensure_ghz()
    if ghz is None:
        raise SystemExit("ghz is not installed and Go is not available to build it")
    vegeta = ensure_vegeta()
    report: dict[str, Any] = {"workers": args.workers, "concurrency": args.concurrency,
                              "connections": args.connections, "k": args.k,
                              "cpus": os.cpu_count(), "load_before": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        with redis_endpoint(work / "redis") as redis_url:
            data = ml100k_split(0.8)
            store = work / "ml-store"
            train_ml100k(data, store)
            n_live = seed_ml100k_state(redis_url, PREFIX, data)
            users = list(data.log.user_ids)
            log(f"ML-100K model trained, {n_live} live events in Redis")
            template = {"user_id": f"{{{{randomInt 1 {len(users) + 1}}}}}", "k": args.k}
            http_port = free_port()
            env = {"WORKERS": str(args.workers), "TRENDING_CACHE_S": "1",
                   "HTTP_PORT": str(http_port)}  # fmt: skip
            with recommender(store, redis_url, PREFIX, work, **env) as srv:
                pid = srv.pid
                assert pid is not None
                targets = work / "targets.json"
                vegeta_targets(targets, f"http://127.0.0.1:{http_port}{RECOMMEND_PATH}",
                               [str(u) for u in range(1, len(users) + 1)], args.k)  # fmt: skip

                def grpc_run(duration: float, rps: int = 0, settle: float = 0.0) -> LoadResult:
                    raw = ghz_report(ghz, srv.target, template, concurrency=args.concurrency,
                                     connections=args.connections, duration_s=duration + settle,
                                     rps=rps, cpus=args.ghz_cpus)  # fmt: skip
                    return ghz_load_result(raw, settle)

                def http_run(duration: float, rps: int = 0, settle: float = 0.0) -> LoadResult:
                    return vegeta_run(vegeta, targets, concurrency=args.concurrency,
                                      duration_s=duration + settle, rate=rps,
                                      settle_s=settle)  # fmt: skip

                grpc_run(args.warmup)
                http_run(args.warmup)
                grpc_max: list[dict[str, Any]] = []
                http_max: list[dict[str, Any]] = []
                for n in range(args.rounds):
                    grpc_max.append(measured(pid, lambda: grpc_run(args.duration)))
                    http_max.append(measured(pid, lambda: http_run(args.duration)))
                    log(f"round {n + 1}: gRPC {grpc_max[-1]}")
                    log(f"round {n + 1}: HTTP {http_max[-1]}")
                g = sorted(grpc_max, key=lambda r: float(r["qps"]))[len(grpc_max) // 2]
                h = sorted(http_max, key=lambda r: float(r["qps"]))[len(http_max) // 2]
                g_rate = max(1, int(g["qps"] / 2))
                h_rate = max(1, int(h["qps"] / 2))
                g_half = measured(pid, lambda: grpc_run(args.duration, g_rate, args.settle))
                log(f"gRPC at half load ({g_rate}/s): {g_half}")
                h_half = measured(pid, lambda: http_run(args.duration, h_rate, args.settle))
                log(f"HTTP at half load ({h_rate}/s): {h_half}")
    report.update({
        "grpc": {"max": g, "rounds_qps": [r["qps"] for r in grpc_max],
                 "half": {**g_half, "target_qps": g_rate}},
        "http": {"max": h, "rounds_qps": [r["qps"] for r in http_max],
                 "half": {**h_half, "target_qps": h_rate}},
        "load_after": os.getloadavg(),
    })  # fmt: skip
    grpc_qps, http_qps = float(g["qps"]), float(h["qps"])
    grpc_p99, http_p99 = float(g_half["p99_ms"]), float(h_half["p99_ms"])
    headline = {
        "grpc_qps": grpc_qps,
        "http_qps": http_qps,
        "qps_ratio": round(http_qps / grpc_qps, 3) if grpc_qps else None,
        "grpc_p99_ms_at_half_load": grpc_p99,
        "http_p99_ms_at_half_load": http_p99,
        "p99_ratio": round(http_p99 / grpc_p99, 3) if grpc_p99 else None,
        "grpc_cpu_ms_per_request": g["server_cpu_ms_per_request"],
        "http_cpu_ms_per_request": h["server_cpu_ms_per_request"],
        "ghz_cpu_ms_per_request": g["client_cpu_ms_per_request"],
        "vegeta_cpu_ms_per_request": h["client_cpu_ms_per_request"],
        "load_before": [round(x, 1) for x in report["load_before"]],
        "load_after": [round(x, 1) for x in report["load_after"]],
    }
    log("details: " + json.dumps(report))
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
