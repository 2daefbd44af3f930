"""System benchmarks with charts: the services together, as a deployment runs them.

Parts (each writes one PNG into docs/img/ and adds its figures to the JSON line):

- ``latency``: Recommend latency distribution (ghz, per-request latencies) with and
  without the click stream being consumed at full speed at the same time
  (``system_latency.png``); then throughput against concurrency with the stream on
  (``system_throughput.png``).
- ``freshness``: one click at a time, produced to Kafka at t0; t1 when the events service
  has written it to the user's Redis features (the list the recommender reads on its next
  request). Histogram of t1 - t0 (``system_freshness.png``). End to end through Recommend
  is ``bench.freshness``.
- ``hr``: ML-100K, ALS trained on the first half in time order; the second half replayed
  in time order; before each event, the user's top-10 from the static model (training
  vector only) and from the real-time fold-in (training history plus the events replayed
  so far). HR@10 per replay day (``system_hr_over_time.png``).
- ``scaling``: a pre-filled 4-partition topic consumed by 1..4 events-service processes in
  one consumer group; events/s between 5 % and 95 % applied (``system_events_scaling.png``).

Memory per service comes from the soak (``python -m bench.soak``), which ``bench.run_all``
charts.

    python -m bench.system [--quick] [--only latency|freshness|hr|scaling ...]

Ends with one JSON line with each part's headline figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.system_common import (
    ROOT,
    Infra,
    Producer,
    StackNames,
    applied_events,
    events_service,
    infrastructure,
    log,
    make_topics,
    movielens_events,
    recommender_model,
    recommender_service,
    rss_mb,
)
from recsys_tools.harness import free_port, wait_serving

IMG = ROOT / "docs" / "img"
PARTS = ("latency", "freshness", "hr", "scaling")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, name: str) -> str:
    IMG.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(IMG / name, dpi=90)
    _plt().close(fig)
    return f"docs/img/{name}"


# ------------------------------------------------------------------------------ latency
def _ghz_latencies(ghz: str, target: str, user: str, concurrency: int,
                   duration_s: float) -> tuple[list[float], float, dict[str, int]]:  # fmt: skip
    """(per-request latencies in ms, requests/s, status counts) of one ghz run."""
    from bench.recommender_common import ghz_report, ghz_status_counts

    report = ghz_report(ghz, target, {"user_id": user, "k": 10}, concurrency=concurrency,
                        connections=min(concurrency, 4), duration_s=duration_s)  # fmt: skip
    lat = [d["latency"] / 1e6 for d in report.get("details") or [] if d.get("status") == "OK"]
    return lat, float(report["rps"]), ghz_status_counts(report)


def part_latency(infra: Infra, work: Path, quick: bool) -> dict[str, Any]:
    from bench.recommender_common import ensure_ghz
    from recsys.redis_io import make_redis

    ghz = ensure_ghz()
    if ghz is None:
        return {"skipped": "ghz is not available (needs Go to build it)"}
    model = recommender_model(work)
    names = StackNames.for_run(f"lat-{int(time.time())}")
    make_topics(infra, names, events_partitions=4)
    events = movielens_events(20000, time.time() - 120)
    port = free_port()
    rec = recommender_service(infra, names, work, model, port, workers=2)
    ev = events_service(infra, names, work)
    rec.start()
    ev.start()
    wait_serving(rec, 180)
    wait_serving(ev, 120)
    target = f"127.0.0.1:{port}"
    user = events[0].user_id
    duration = 4.0 if quick else 15.0
    redis = make_redis(infra.redis_url)
    lock = threading.Lock()

    def backlog(sent: int) -> bool:
        with lock:
            return sent - applied_events(redis, names.prefix) > 20000

    out: dict[str, Any] = {"ghz_duration_s": duration}
    try:
        _ghz_latencies(ghz, target, user, 4, 2.0)  # warm-up
        quiet, quiet_rps, _ = _ghz_latencies(ghz, target, user, 8, duration)
        stop = threading.Event()
        producer = Producer(infra.bootstrap, names.events_topic, events, repeat=True,
                            stop=stop, hold=backlog)  # fmt: skip
        producer.start()
        time.sleep(2.0)
        applied0, t0 = applied_events(redis, names.prefix), time.monotonic()
        loaded, loaded_rps, codes = _ghz_latencies(ghz, target, user, 8, duration)
        with lock:
            ev_rate = (applied_events(redis, names.prefix) - applied0) / (time.monotonic() - t0)
        levels = [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32]
        curve = []
        for c in levels:
            _, rps, _ = _ghz_latencies(ghz, target, user, c, duration)
            curve.append((c, rps))
        out["rss_mb"] = {"recommender": round(rss_mb(rec.pid), 1),
                         "events": round(rss_mb(ev.pid), 1)}  # fmt: skip
        stop.set()
        producer.join(30)
    finally:
        rec.stop(timeout_s=30)
        ev.stop(timeout_s=30)
        redis.close()

    def pct(xs: list[float], q: float) -> float:
        return round(float(np.percentile(xs, q)), 2) if xs else float("nan")

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    hi = max(pct(loaded, 99.5), pct(quiet, 99.5))
    bins = np.linspace(0, hi, 60)
    ax.hist(quiet, bins=bins, alpha=0.6, label=f"no stream: p50 {pct(quiet, 50)} / p99 "
            f"{pct(quiet, 99)} ms")  # fmt: skip
    ax.hist(loaded, bins=bins, alpha=0.6, label=f"stream at {ev_rate:.0f} events/s: p50 "
            f"{pct(loaded, 50)} / p99 {pct(loaded, 99)} ms")  # fmt: skip
    ax.set_xlabel("Recommend latency (ms), ghz, 8 in flight, 2 workers")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    ax.set_title("Recommend latency with and without the click stream")
    out["latency_chart"] = _save(fig, "system_latency.png")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([c for c, _ in curve], [r for _, r in curve], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests (ghz -c)")
    ax.set_ylabel("Recommend requests/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against concurrency (click stream on)")
    ax.grid(alpha=0.3)
    out["throughput_chart"] = _save(fig, "system_throughput.png")
    out.update({
        "p50_ms_no_stream": pct(quiet, 50), "p99_ms_no_stream": pct(quiet, 99),
        "qps_no_stream": round(quiet_rps, 1),
        "p50_ms_with_stream": pct(loaded, 50), "p99_ms_with_stream": pct(loaded, 99),
        "qps_with_stream": round(loaded_rps, 1), "stream_events_per_s": round(ev_rate, 1),
        "status_codes_with_stream": codes,
        "qps_by_concurrency": {str(c): round(r, 1) for c, r in curve},
    })  # fmt: skip
    return out


# ---------------------------------------------------------------------------- freshness
def part_freshness(infra: Infra, work: Path, quick: bool) -> dict[str, Any]:
    from recsys.events.v1 import events_pb2
    from recsys.kafka_codec import encode
    from recsys.kafka_io import make_producer
    from recsys.redis_io import make_redis
    from recsys.store import KeySchema

    names = StackNames.for_run(f"fresh-{int(time.time())}")
    make_topics(infra, names)
    ev = events_service(infra, names, work)
    ev.start()
    wait_serving(ev, 120)
    redis = make_redis(infra.redis_url)
    producer = make_producer(infra.bootstrap, linger_ms=0)
    keys = KeySchema(names.prefix)
    rng = random.Random(5)
    n = 300 if quick else 2000
    lat: list[float] = []
    timeouts = 0
    try:
        for i in range(-20, n):  # the first 20: group join and first fetches, not measured
            user = f"u{rng.randrange(500)}"
            item = f"fresh-{i}"
            msg = events_pb2.ClickEvent(
                event_id=f"{names.prefix}-{i}",
                user_id=user,
                item_id=item,
                event_type=events_pb2.EVENT_TYPE_CLICK,
            )
            msg.event_time.FromNanoseconds(time.time_ns())
            value, headers = encode(msg)
            t0 = time.perf_counter()
            producer.send(names.events_topic, key=user.encode(), value=value,
                          headers=list(headers))  # fmt: skip
            producer.flush(10)
            deadline = t0 + (60 if i < 0 else 10)
            while True:
                head = redis.lindex(keys.recent(user), 0)
                if head is not None and json.loads(head)["item"] == item:
                    if i >= 0:
                        lat.append((time.perf_counter() - t0) * 1000)
                    break
                if time.perf_counter() > deadline:
                    timeouts += i >= 0
                    break
                time.sleep(0.0005)
    finally:
        producer.close(timeout=5)
        redis.close()
        ev.stop(timeout_s=30)
    arr = np.array(lat)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.hist(arr, bins=np.linspace(0, float(np.percentile(arr, 99.5)), 50))
    for q in (50, 99):
        v = float(np.percentile(arr, q))
        ax.axvline(v, color="k", ls="--", lw=0.8)
        ax.text(v, ax.get_ylim()[1] * 0.9, f" p{q} {v:.1f} ms", fontsize=8)
    ax.set_xlabel("produce → features in Redis (ms)")
    ax.set_ylabel("clicks")
    ax.set_title(f"Freshness of {len(lat)} clicks, one at a time")
    return {"clicks": len(lat), "timeouts": timeouts,
            "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p90_ms": round(float(np.percentile(arr, 90)), 2),
            "p99_ms": round(float(np.percentile(arr, 99)), 2),
            "chart": _save(fig, "system_freshness.png")}  # fmt: skip


# ---------------------------------------------------------------------------------- HR
def part_hr(quick: bool) -> dict[str, Any]:
    from bench.recommender_common import ml100k_split
    from services.recommender.training import TrainConfig, UserItemMatrix, train

    data = ml100k_split(0.5)
    lg = data.log
    model = train(UserItemMatrix(lg.matrix(data.train_idx), lg.user_ids, lg.item_ids),
                  TrainConfig(), items=lg.item_meta)  # fmt: skip
    events = [int(e) for e in data.rest_idx]
    if quick:
        users = sorted({int(lg.users[e]) for e in events})
        keep = set(random.Random(3).sample(users, min(150, len(users))))
        events = [e for e in events if int(lg.users[e]) in keep]
    t_first = float(lg.timestamps[events[0]])
    static_cache: dict[str, set[str]] = {}
    replayed: dict[str, dict[str, float]] = defaultdict(dict)
    days: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # events, static, realtime
    for e in events:
        user, item = lg.user_ids[int(lg.users[e])], lg.item_ids[int(lg.items[e])]
        if user not in static_cache:
            static_cache[user] = set(model.recommend(user, None, 10, with_reasons=False).ids)
        merged = dict(model.user_history(user))
        for i, w in replayed[user].items():
            merged[i] = merged.get(i, 0.0) + w
        live = set(model.recommend(user, merged, 10, with_reasons=False).ids)
        bucket = int((float(lg.timestamps[e]) - t_first) // (7 * 86400))
        row = days[bucket]
        row[0] += 1
        row[1] += item in static_cache[user]
        row[2] += item in live
        replayed[user][item] = replayed[user].get(item, 0.0) + float(lg.ratings[e])
    weeks = sorted(days)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(weeks, [days[w][1] / days[w][0] for w in weeks], marker="o", label="static model")
    ax.plot(weeks, [days[w][2] / days[w][0] for w in weeks], marker="o",
            label="real-time fold-in")  # fmt: skip
    ax.set_xlabel("weeks into the replay (second half of ML-100K)")
    ax.set_ylabel("HR@10")
    ax.set_title(f"HR@10 over replay time ({len(events)} events)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    n = len(events)
    return {"events": n, "hr10_static": round(sum(d[1] for d in days.values()) / n, 4),
            "hr10_realtime": round(sum(d[2] for d in days.values()) / n, 4),
            "chart": _save(fig, "system_hr_over_time.png")}  # fmt: skip


# ------------------------------------------------------------------------------ scaling
def part_scaling(infra: Infra, work: Path, quick: bool) -> dict[str, Any]:
    from recsys.redis_io import make_redis

    n_events = 30000 if quick else 120000
    base = movielens_events(20000, time.time() - 120)
    names = StackNames.for_run(f"scale-{int(time.time())}")
    make_topics(infra, names, events_partitions=4)
    records = []
    for i in range(n_events):  # the slice again and again, fresh ids each round
        ev = type(base[0])()
        ev.CopyFrom(base[i % len(base)])
        ev.event_id = f"{ev.event_id}-r{i // len(base)}"
        records.append(ev)
    producer = Producer(infra.bootstrap, names.events_topic, records)
    producer.start()
    producer.join(600)
    total = producer.sent
    log(f"scaling: {total} events in the topic")
    redis = make_redis(infra.redis_url)
    rates: dict[int, float] = {}
    try:
        for k in (1, 2, 3, 4):
            run = StackNames(names.events_topic, names.feedback_topic, names.scored_topic,
                             f"{names.prefix}-k{k}")  # fmt: skip
            svcs = []
            for i in range(k):
                svc = events_service(infra, run, work, index=10 * k + i,
                                     EVENTS_GROUP_ID=f"{names.events_topic}-k{k}",
                                     LOG_LEVEL="warning")  # fmt: skip
                svc.start()
                svcs.append(svc)
            marks: dict[float, float] = {}
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = applied_events(redis, run.prefix)
                for q in (0.05, 0.95):
                    if q not in marks and done >= q * total:
                        marks[q] = time.monotonic()
                if 0.95 in marks:
                    break
                time.sleep(0.05)
            for svc in svcs:
                svc.stop(timeout_s=30)
            if 0.95 in marks and 0.05 in marks:
                rates[k] = 0.9 * total / (marks[0.95] - marks[0.05])
                log(f"scaling: {k} process(es): {rates[k]:.0f} events/s")
    finally:
        redis.close()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(list(rates), list(rates.values()), marker="o")
    ax.set_xticks(list(rates))
    ax.set_xlabel("events-service processes in one consumer group (4 partitions)")
    ax.set_ylabel("events/s applied")
    ax.set_ylim(bottom=0)
    ax.set_title("Events throughput against consumer processes")
    ax.grid(alpha=0.3)
    return {"events": total, "events_per_s": {str(k): round(r, 1) for k, r in rates.items()},
            "chart": _save(fig, "system_events_scaling.png")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes in all")
    parser.add_argument("--only", action="append", choices=PARTS)
    args = parser.parse_args(argv)
    parts = [p for p in PARTS if not args.only or p in args.only]
    result: dict[str, Any] = {"quick": args.quick}
    t0 = time.monotonic()
    if "hr" in parts:
        log("part hr")
        result["hr"] = part_hr(args.quick)
    needs_infra = [p for p in parts if p != "hr"]
    if needs_infra:
        with tempfile.TemporaryDirectory(prefix="recsys-system-") as tmp, \
                infrastructure(Path(tmp), require_apache=False) as infra:  # fmt: skip
            for part in needs_infra:
                log(f"part {part}")
                fn = {"latency": part_latency, "freshness": part_freshness,
                      "scaling": part_scaling}[part]  # fmt: skip
                try:
                    result[part] = fn(infra, Path(tmp), args.quick)
                except Exception as exc:
                    result[part] = {"error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result), flush=True)
    return 0 if not any("error" in v for v in result.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
