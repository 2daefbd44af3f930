"""Soak: the whole pipeline at full speed for minutes; memory growth of every service.

The events stream (the MovieLens slice again and again, each round with fresh event ids and
current times, so every round is new work), the feedback stream and a gRPC client loop run
together against the three services, real Apache Kafka and real redis-server. Resident
memory (RSS, psutil; a process and its children) of each process is sampled every few
seconds. Growth compares the mean of the last tenth of the run with the mean of the tenth
after the warm-up (the first fifth: imports, model load, caches filling); the goal is under
10 % per service. Redis grows with the data it keeps (new users, new ids in the
idempotency sets, which expire with the user TTL) and Kafka with its page cache: both are
reported, but the goal is about the services.

    python -m bench.soak [--minutes 10] [--quick]

Ends with one JSON line: {"minutes", "events_per_s", "growth_pct": {...}, "max_growth_pct", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import fmean
from typing import Any

from bench.system_common import (
    ClientLoop,
    Producer,
    StackNames,
    applied_events,
    events_service,
    infrastructure,
    log,
    make_topics,
    recommender_model,
    recommender_service,
    rss_mb,
    sentiment_model,
    sentiment_service,
    workload,
)
from recsys_tools.harness import free_port, wait_serving

SERVICES = ("events", "sentiment", "recommender")
GOAL_PCT = 10.0


def growth(samples: list[float]) -> tuple[float, float, float]:
    """(baseline MiB after warm-up, final MiB, growth %) of one process's RSS samples."""
    n = len(samples)
    if n < 10:
        return float("nan"), float("nan"), float("nan")
    tenth = max(1, n // 10)
    start = fmean(samples[n // 5 : n // 5 + tenth])
    end = fmean(samples[-tenth:])
    return start, end, 100.0 * (end - start) / start if start else float("nan")


def run(minutes: float, work: Path, sample_s: float, plot: Path | None) -> dict[str, Any]:
    rec_model = recommender_model(work)
    sent_model = sentiment_model(work)
    load = workload(20000, 2000, anchor=time.time() - 120)
    with infrastructure(work) as infra:
        from recsys.redis_io import make_redis

        names = StackNames.for_run(f"soak-{int(time.time())}")
        make_topics(infra, names)
        port = free_port()
        services = [events_service(infra, names, work),
                    sentiment_service(infra, names, work, sent_model),
                    recommender_service(infra, names, work, rec_model, port)]  # fmt: skip
        for svc in services:
            svc.start()
        for svc in services:
            wait_serving(svc, 180)
        redis = make_redis(infra.redis_url)
        lock = threading.Lock()

        def backlog(sent: int) -> bool:  # keep the events backlog under ~20k records
            with lock:
                return sent - applied_events(redis, names.prefix) > 20000

        stop = threading.Event()
        producers = [Producer(infra.bootstrap, names.events_topic, load.events, repeat=True,
                              stop=stop, hold=backlog),
                     Producer(infra.bootstrap, names.feedback_topic, load.feedback, chunk=100,
                              repeat=True, stop=stop,
                              hold=lambda sent: sent > 4 * producers[0].sent // 10)]  # fmt: skip
        client = ClientLoop(f"127.0.0.1:{port}", sorted({e.user_id for e in load.events}))
        pids = {s.name: s.pid for s in services} | {"kafka": infra.kafka_pid(),
                                                   "redis": infra.redis.pid}  # fmt: skip
        samples: dict[str, list[float]] = {name: [] for name in pids}
        times: list[float] = []
        for p in producers:
            p.start()
        client.start()
        t0 = time.monotonic()
        end = t0 + minutes * 60
        try:
            while time.monotonic() < end:
                times.append(time.monotonic() - t0)
                for name, pid in pids.items():
                    samples[name].append(rss_mb(pid))
                time.sleep(sample_s)
                for svc in services:
                    if not svc.running():
                        raise RuntimeError(f"{svc.name} died: {svc.log_text()[-2000:]}")
        finally:
            stop.set()
            client.stop_event.set()
            for p in producers:
                p.join(30)
            client.join(10)
            with lock:
                applied = applied_events(redis, names.prefix)
            elapsed = time.monotonic() - t0
            exits = {s.name: s.stop(timeout_s=30) for s in services}
            redis.close()
    out: dict[str, Any] = {}
    for name, series in samples.items():
        start, final, pct = growth(series)
        out[name] = {"start_mb": round(start, 1), "end_mb": round(final, 1),
                     "growth_pct": round(pct, 1)}  # fmt: skip
    if plot is not None:
        _plot(times, samples, plot)
    worst = max(out[s]["growth_pct"] for s in SERVICES)
    return {
        "minutes": round(elapsed / 60, 2),
        "events_applied": applied,
        "events_per_s": round(applied / elapsed, 1),
        "feedback_sent": producers[1].sent,
        "grpc_calls": client.summary()["calls"],
        "grpc_codes": client.summary()["codes"],
        "memory": out,
        "growth_pct": {name: out[name]["growth_pct"] for name in out},
        "max_growth_pct": worst,
        "goal_pct": GOAL_PCT,
        "within_goal": worst < GOAL_PCT,
        "exit_codes": exits,
    }


def _plot(times: list[float], samples: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for name, series in samples.items():
        ax.plot([t / 60 for t in times], series, label=name)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_yscale("log")
    ax.set_title("Memory of each process during the soak")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="one minute")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--plot", type=Path, help="write the RSS-over-time chart here (PNG)")
    args = parser.parse_args(argv)
    minutes = 1.0 if args.quick else args.minutes
    with tempfile.TemporaryDirectory(prefix="recsys-soak-") as tmp:
        result = run(minutes, Path(tmp), args.sample_s, args.plot)
    log(f"memory: {json.dumps(result['memory'])}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
