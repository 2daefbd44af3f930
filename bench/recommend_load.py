"""Recommend throughput and latency under ghz, against a no-op handler on the same stack.

For each catalog (the ML-100K model, and a synthetic 100,000-item model), the real server
(``python -m services.recommender``, ``WORKERS`` processes sharing the port) runs with live
user state in a real redis-server; ghz (compiled Go, built here with ``go install`` if
missing) drives ``Recommend`` for random known users:

1. the maximum rate at fixed concurrency (``-c``, spread over ``--connections`` HTTP/2
   connections so SO_REUSEPORT can spread them over the workers);
2. the latency at half that rate (``--rps``), the figure a capacity plan uses, in steady
   state: its percentiles leave out the requests of the first ``--settle`` seconds (1),
   while ghz's fresh connections are set up and requests queue behind them; the p99 over
   every request is reported next to it (``p99_with_start_ms``; ghz only);
3. in the same run, the same server in ``RECOMMENDER_NOOP=1`` mode (Recommend returns an
   empty answer without touching the model or Redis): what gRPC, protobuf and the
   servicer cost on their own. The two servers run side by side and ghz alternates
   between them (``--rounds`` each, median kept), so background load on the machine
   weighs on both alike. ``ratio`` = Recommend QPS / no-op QPS.
4. with ``--auth``, in the same run, the same Recommend load against two fresh servers
   started together, one with ``AUTH_MODE=required`` (a credentials file of
   ``--auth-clients`` clients), alternated. Both get the same calls, a frontend's bearer token
   included (the server without auth ignores it): ghz renders its metadata per call, on
   the cores the servers use, so sending it to one side only measured ghz, not auth
   (half the peak rate at a load average of 40). ``auth_qps_overhead`` = 1 - its max
   QPS / the plain server's; ``auth_p99_overhead`` = its p99 / the plain server's - 1,
   both at one offered rate (half the plain server's peak); medians over ``--rounds``.
   ``auth_check_us``: the policy's decision alone (``recsys.grpc_auth.auth_refusal`` on
   a stand-in context), microseconds per call. The issue's goal: auth adds < 5% to the p99.

Without Go, a Python multiprocessing client stands in (documented in docs/benchmarks.md;
it competes with the server for the same cores, so its figures are lower bounds).

    python -m bench.recommend_load [--quick] [--concurrency 16] [--connections 16] [--rounds 3]
                                   [--auth [--auth-clients 20]] [--skip-large]

Ends with one JSON line: the ML-100K figures at top level, the large catalog under "large".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.recommender_common import (
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
    seed_synthetic_state,
    synthetic_model,
    train_ml100k,
)

PREFIX = "bench-load"


# ----------------------------------------------------------------- Python fallback client
def _py_worker(target: str, users: list[str], k: int, duration_s: float, threads: int,
               rps: float, out: Any, metadata: tuple[tuple[str, str], ...] | None = None
               ) -> None:  # fmt: skip
    import random
    import threading

    import grpc

    from recsys.recommender.v1 import recommender_pb2 as pb
    from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = pb_grpc.RecommenderServiceStub(channel)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    end = time.perf_counter() + duration_s
    interval = threads / rps if rps else 0.0

    def loop() -> None:
        rng = random.Random()
        next_at = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now >= end:
                return
            if interval:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
            started = time.perf_counter()
            try:
                request = pb.RecommendRequest(user_id=rng.choice(users), k=k)
                stub.Recommend(request, timeout=5, metadata=metadata)
                with lock:
                    latencies.append(time.perf_counter() - started)
            except grpc.RpcError as exc:
                with lock:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    channel.close()
    out.put((latencies, errors))


def run_python(target: str, users: list[str], *, concurrency: int, connections: int,
               duration_s: float, rps: int = 0, k: int = 10,
               metadata: dict[str, str] | None = None) -> LoadResult:  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, concurrency // connections)
    pairs = tuple(metadata.items()) if metadata else None
    work = (target, users, k, duration_s, threads, rps / connections, queue, pairs)
    procs = [ctx.Process(target=_py_worker, args=work) for _ in range(connections)]
    for p in procs:
        p.start()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for _ in procs:
        lat, err = queue.get()
        latencies += lat
        for key, n in err.items():
            errors[key] = errors.get(key, 0) + n
    for p in procs:
        p.join()
    ms = sorted(x * 1000 for x in latencies)
    return LoadResult("python", len(ms), len(ms) / duration_s, percentile(ms, 0.5),
                      percentile(ms, 0.9), percentile(ms, 0.99), errors)  # fmt: skip


# ---------------------------------------------------------------------------- the runs
class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ghz = None if args.python_client else ensure_ghz()
        if self.ghz is None:
            log("ghz unavailable: using the Python multiprocessing client")

    def run(self, target: str, users: list[str], template: dict[str, Any], duration_s: float,
            rps: int = 0, settle_s: float = 0.0,
            metadata: dict[str, str] | None = None) -> LoadResult:  # fmt: skip
        a = self.args
        if self.ghz is not None:
            # a settled run lasts settle_s longer, so the tally still covers duration_s
            report = ghz_report(self.ghz, target, template, concurrency=a.concurrency,
                                connections=a.connections, duration_s=duration_s + settle_s,
                                rps=rps, cpus=a.ghz_cpus, metadata=metadata)  # fmt: skip
            return ghz_load_result(report, settle_s)
        return run_python(target, users, concurrency=a.concurrency, connections=a.connections,
                          duration_s=duration_s, rps=rps, metadata=metadata)  # fmt: skip

    def measure(self, target: str, users: list[str], template: dict[str, Any],
                half: bool = True) -> dict[str, Any]:  # fmt: skip
        a = self.args
        self.run(target, users, template, a.warmup)
        peak = self.run(target, users, template, a.duration)
        out: dict[str, Any] = {"max": peak.summary()}
        log(f"  max: {peak.summary()}")
        if half:
            out["half"] = self.at_half(target, users, template, peak.rps)
        return out

    def at_half(self, target: str, users: list[str], template: dict[str, Any],
                peak_qps: float) -> dict[str, Any]:  # fmt: skip
        rate = max(1, int(peak_qps / 2))
        # steady state: the first --settle seconds (ghz's fresh connections) are left out of
        # the percentiles; the whole-run p99 is kept next to them as p99_with_start_ms
        result = self.run(target, users, template, self.args.duration, rps=rate,
                          settle_s=self.args.settle)  # fmt: skip
        log(f"  half load ({rate}/s): {result.summary()}")
        return {**result.summary(), "target_qps": rate}

    def compare(self, rec_target: str, noop_target: str, users: list[str],
                template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
        """Alternate Recommend and no-op runs (``--rounds`` each) and keep the median of each,
        so that load from other processes on the machine weighs on both alike."""
        a = self.args
        self.run(rec_target, users, template, a.warmup)
        self.run(noop_target, users, template, a.warmup)
        recs: list[LoadResult] = []
        noops: list[LoadResult] = []
        for n in range(a.rounds):
            recs.append(self.run(rec_target, users, template, a.duration))
            noops.append(self.run(noop_target, users, template, a.duration))
            log(f"  round {n + 1}: recommend {recs[-1].summary()}")
            log(f"  round {n + 1}: no-op     {noops[-1].summary()}")
        rec = sorted(recs, key=lambda r: r.rps)[len(recs) // 2]
        noop = sorted(noops, key=lambda r: r.rps)[len(noops) // 2]
        rec_out = {"max": rec.summary(), "rounds_qps": [round(r.rps, 1) for r in recs]}
        noop_out = {"max": noop.summary(), "rounds_qps": [round(r.rps, 1) for r in noops]}
        rec_out["half"] = self.at_half(rec_target, users, template, rec.rps)
        # the same for the no-op: the latency floor this machine gives any handler at half load
        noop_out["half"] = self.at_half(noop_target, users, template, noop.rps)
        return rec_out, noop_out

    def compare_auth(
        self,
        plain_target: str,
        auth_target: str,
        users: list[str],
        template: dict[str, Any],
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        """The same Recommend load with and without auth, alternated (``--rounds`` each):
        the peak rate of each, then both at one offered rate (half the plain server's
        median peak), so the p99s compare like for like. Medians of the rounds. Both get
        the token: the client's work is the same, only the server's check differs."""
        a = self.args
        self.run(plain_target, users, template, a.warmup, metadata=metadata)
        self.run(auth_target, users, template, a.warmup, metadata=metadata)
        plain: list[LoadResult] = []
        auth: list[LoadResult] = []
        for n in range(a.rounds):
            plain.append(self.run(plain_target, users, template, a.duration, metadata=metadata))
            auth.append(self.run(auth_target, users, template, a.duration, metadata=metadata))
            log(f"  round {n + 1}: no auth {plain[-1].summary()}")
            log(f"  round {n + 1}: auth    {auth[-1].summary()}")
        rate = max(1, int(_median([r.rps for r in plain]) / 2))
        plain_half: list[LoadResult] = []
        auth_half: list[LoadResult] = []
        for n in range(a.rounds):
            plain_half.append(self.run(plain_target, users, template, a.duration, rps=rate,
                                       settle_s=a.settle, metadata=metadata))  # fmt: skip
            auth_half.append(self.run(auth_target, users, template, a.duration, rps=rate,
                                      settle_s=a.settle, metadata=metadata))  # fmt: skip
            log(f"  half load ({rate}/s) round {n + 1}: no auth {plain_half[-1].summary()}")
            log(f"  half load ({rate}/s) round {n + 1}: auth    {auth_half[-1].summary()}")
        for result in (*auth, *auth_half):  # a refused token would make auth look cheap
            failed = {k: n for k, n in result.errors.items() if k != "cut_at_end"}
            if failed:
                raise RuntimeError(f"calls with the token failed: {failed}")
        qps, auth_qps = _median([r.rps for r in plain]), _median([r.rps for r in auth])
        p99 = _median([r.p99_ms for r in plain_half])
        auth_p99 = _median([r.p99_ms for r in auth_half])
        return {
            "target_qps": rate,
            "qps": round(qps, 1),
            "auth_qps": round(auth_qps, 1),
            "p99_ms_at_half_load": round(p99, 3),
            "auth_p99_ms_at_half_load": round(auth_p99, 3),
            "rounds_p99_ms": [round(r.p99_ms, 3) for r in plain_half],
            "rounds_auth_p99_ms": [round(r.p99_ms, 3) for r in auth_half],
            "auth_qps_overhead": round(1 - auth_qps / qps, 4) if qps else None,
            "auth_p99_overhead": round(auth_p99 / p99 - 1, 4) if p99 else None,
        }


def auth_check_us(credentials: str, metadata: dict[str, str], calls: int = 20_000) -> float:
    """Microseconds per call of the server's auth check alone (reading the metadata, the
    token's SHA-256, comparing it with every client, the decision), best of five."""
    import timeit

    from recsys.auth import load_policy
    from recsys.grpc_auth import auth_refusal

    class Context:  # what auth_refusal reads of a grpc.aio context
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("user-agent", "grpc-go/1.0"), *metadata.items())

    policy = load_policy(credentials)
    method = "recsys.recommender.v1.RecommenderService/Recommend"
    context = Context()
    from services.recommender.metrics import AUTH_DENIED

    def check() -> object:
        return auth_refusal(policy, "Recommend", method, context, AUTH_DENIED)

    if check() is not None:
        raise RuntimeError("the benchmark's token is refused")
    best = min(timeit.repeat(check, number=calls, repeat=5))
    return best / calls * 1e6


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def auth_credentials(directory: Path, clients: int) -> tuple[str, dict[str, str]]:
    """A credentials directory of ``clients`` frontends, as ``recsys auth add-client``
    writes it, and the bearer metadata of one of them (the last, so the comparison runs
    over every entry)."""
    from recsys.auth import ROLES
    from recsys_tools.commands.auth import add_client

    token = ""
    for n in range(clients):
        _, token = add_client(directory, f"frontend-{n}", list(ROLES["frontend"]))
    return str(directory), {"authorization": f"Bearer {token}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 1-2 minutes)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds at the start of each half-load run left out of its "
        "percentiles (connection set-up); 0 counts every request",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    # one connection per in-flight request, as from 16 frontend channels: SO_REUSEPORT hashes
    # each connection to a worker, and 8 connections often split so unevenly that one worker
    # got most of the "half" load; 16 split evenly or nearly (docs/benchmarks.md, History,
    # "Where the half-load tail came from")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--ghz-cpus", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--large-items", type=int, default=100_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (2 / 3)")
    parser.add_argument("--python-client", action="store_true", help="force the fallback")
    parser.add_argument("--auth", action="store_true",
                        help="also measure what AUTH_MODE=required costs (auth_p99_overhead, "
                             "auth_qps_overhead)")  # fmt: skip
    parser.add_argument("--auth-clients", type=int, default=20,
                        help="clients in the credentials file of the auth run")  # fmt: skip
    args = parser.parse_args(argv)
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    args.warmup = args.warmup or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    driver = Driver(args)
    server_env = {"WORKERS": str(args.workers), "TRENDING_CACHE_S": "1"}
    report: dict[str, Any] = {"workers": args.workers, "concurrency": args.concurrency,
                              "connections": args.connections, "k": args.k,
                              "cpus": os.cpu_count()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        work = Path(tmp)
        with redis_endpoint(work / "redis") as redis_url:
            # ---- ML-100K: trained on the first 80% (time order); the rest is live state
            started = time.perf_counter()
            data = ml100k_split(0.8)
            ml_store = work / "ml-store"
            train_ml100k(data, ml_store)
            n_live = seed_ml100k_state(redis_url, PREFIX, data)
            log(f"ML-100K model trained, {n_live} live events in Redis "
                f"({time.perf_counter() - started:.1f}s)")  # fmt: skip
            ml_users = list(data.log.user_ids)
            n_ml_items = len(data.log.item_ids)
            template = {"user_id": f"{{{{randomInt 1 {len(ml_users) + 1}}}}}", "k": args.k}
            log("ML-100K Recommend vs the no-op handler on the same stack")
            with (
                recommender(ml_store, redis_url, PREFIX, work, **server_env) as srv,
                recommender(ml_store, redis_url, PREFIX, work, RECOMMENDER_NOOP="1",
                            **server_env) as noop_srv,
            ):  # fmt: skip
                ml, noop = driver.compare(srv.target, noop_srv.target, ml_users, template)
            if args.auth:
                # Two fresh servers started together, so that start time and warm-up are
                # alike on both sides (the long-running server above against one started
                # minutes later was the first design; docs/benchmarks.md, History, "Auth
                # overhead")
                log(f"ML-100K Recommend with and without auth ({args.auth_clients} clients)")
                creds, metadata = auth_credentials(work / "credentials", args.auth_clients)
                auth_env = {"AUTH_MODE": "required", "AUTH_CREDENTIALS_FILE": creds}
                with (
                    recommender(ml_store, redis_url, PREFIX, work, **server_env) as plain_srv,
                    recommender(ml_store, redis_url, PREFIX, work, **auth_env,
                                **server_env) as auth_srv,
                ):  # fmt: skip
                    report["auth"] = driver.compare_auth(
                        plain_srv.target, auth_srv.target, ml_users, template, metadata
                    )
                report["auth"]["auth_check_us"] = round(auth_check_us(creds, metadata), 2)
            report["ml100k"] = {"catalog_items": n_ml_items, **ml}
            report["noop"] = noop
            # ---- synthetic large catalog
            if not args.skip_large:
                n_users = 5000
                large_store = work / "large-store"
                started = time.perf_counter()
                synthetic_model(large_store, args.large_items, n_users=n_users)
                seed_synthetic_state(redis_url, PREFIX + "-large", n_users, args.large_items)
                log(f"synthetic {args.large_items}-item model ready "
                    f"({time.perf_counter() - started:.1f}s)")  # fmt: skip
                users = [f"u{n}" for n in range(n_users)]
                template_l = {"user_id": f"u{{{{randomInt 0 {n_users}}}}}", "k": args.k}
                log(f"{args.large_items}-item Recommend")
                with recommender(large_store, redis_url, PREFIX + "-large", work,
                                 **server_env) as srv:  # fmt: skip
                    large = driver.measure(srv.target, users, template_l)
                report["large"] = {"catalog_items": args.large_items, **large}
    qps = report["ml100k"]["max"]["qps"]
    noop_qps = report["noop"]["max"]["qps"]
    headline: dict[str, Any] = {
        "catalog_items": report["ml100k"]["catalog_items"],
        "qps": qps,
        "noop_qps": noop_qps,
        "ratio": round(qps / noop_qps, 3) if noop_qps else None,
        "p50_ms": report["ml100k"]["max"]["p50_ms"],
        "p99_ms_at_half_load": report["ml100k"]["half"]["p99_ms"],
        "noop_p99_ms_at_half_load": report["noop"]["half"]["p99_ms"],
        "p99_ms_at_half_load_with_start": report["ml100k"]["half"].get("p99_with_start_ms"),
        "tool": report["ml100k"]["max"]["tool"],
    }
    if "auth" in report:
        headline["auth_p99_overhead"] = report["auth"]["auth_p99_overhead"]
        headline["auth_qps_overhead"] = report["auth"]["auth_qps_overhead"]
        headline["auth_check_us"] = report["auth"]["auth_check_us"]
        headline["auth_clients"] = args.auth_clients
    if "large" in report:
        headline["large"] = {
            "catalog_items": report["large"]["catalog_items"],
            "qps": report["large"]["max"]["qps"],
            "p50_ms": report["large"]["max"]["p50_ms"],
            "p99_ms_at_half_load": report["large"]["half"]["p99_ms"],
            "p99_ms_at_half_load_with_start": report["large"]["half"].get("p99_with_start_ms"),
        }
    log("details: " + json.dumps(report))
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
