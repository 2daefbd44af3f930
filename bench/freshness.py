"""Freshness: from producing a click to Kafka until Recommend for that user reflects it.

The whole pipeline runs: Kafka, the events service (``python -m services.events``), a
redis-server, and the recommender (``python -m services.recommender``, two workers) serving
an ALS model trained on ML-100K. For each click, a random user's current top item is
clicked: the click is produced (acks=all, no linger) at t0, then ``Recommend`` is polled
back to back until that item has left the list and the list differs from before: t1.
Freshness = t1 - t0, so it includes the produce round trip, the consumer's fetch, the
Redis script, and one request. The clicks are sequential (one in flight), which measures
the latency of the pipeline, not its throughput (see bench/events_throughput.py).

``--under-load EVENTS_PER_S`` measures the same while the events service absorbs a
background stream: a separate process produces synthetic clicks of other users (``bg-u*``)
to the same topic at that rate, paced every few milliseconds, from before the first
measured click until the last (bounded: at most ``--background-max-s`` seconds). What the
events service actually absorbed is read from Redis (the applied-event counters, over the
measured window) and reported as ``background_events_per_s``, next to what the producer
managed to send (``background_produced_per_s``): on a small machine the producer, the
broker, the events service, Redis and the recommender share the cores.

    python -m bench.freshness [--quick] [--clicks N] [--under-load EVENTS_PER_S]

Ends with one JSON line: {"clicks", "p50_ms", "p99_ms", ...} (with ``--under-load``, also
"background_events_per_s", "background_produced_per_s", "background_target_per_s").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import numpy as np

from bench.recommender_common import (
    kafka_endpoint,
    log,
    ml100k_split,
    recommender,
    redis_endpoint,
    train_ml100k,
)
from recsys_tools.harness import events_service

PREFIX = "bench-fresh"


def background_clicks(
    bootstrap: str, topic: str, rate: float, max_s: float, items: list[str],
    stop: EventType, sent: Synchronized,  # type: ignore[type-arg]
) -> None:  # fmt: skip
    """Produce clicks of background users at ``rate`` per second until ``stop`` is set or
    ``max_s`` has passed (so at most ``rate * max_s`` records); ``sent`` counts them.

    Runs in a process of its own, so its CPU does not stall the measuring loop's GIL.
    Paced in slices of 5 ms: it never sends ahead of ``rate * elapsed``, and when it falls
    behind (the cores are busy) it catches up in larger sends rather than skipping.
    """
    from recsys.events.v1 import events_pb2
    from recsys.kafka_codec import encode
    from recsys.kafka_io import make_producer

    producer = make_producer(bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1,
                             client_id="bench-freshness-background")  # fmt: skip
    rng = random.Random(11)
    headers = list(encode(events_pb2.ClickEvent())[1])
    started = time.monotonic()
    n = 0
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed > max_s:
                break
            due = int(rate * elapsed)
            if n >= due:
                time.sleep(0.005)
                continue
            now_ns = time.time_ns()
            for _ in range(min(due - n, 2000)):
                user = f"bg-u{rng.randrange(50_000)}"
                ev = events_pb2.ClickEvent(event_id=f"{topic}-bg-{n}", user_id=user,
                                           item_id=rng.choice(items),
                                           event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
                ev.event_time.FromNanoseconds(now_ns)
                producer.send(topic, key=user.encode(), value=ev.SerializeToString(),
                              headers=headers)  # fmt: skip
                n += 1
            sent.value = n
        producer.flush(30)
    finally:
        sent.value = n
        producer.close(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--clicks", type=int, default=None, help="default 1000 (quick) / 3000")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=10.0, help="give up on one click")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--under-load",
        type=float,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="background clicks per second while measuring (default: none)",
    )
    parser.add_argument(
        "--background-max-s",
        type=float,
        default=600.0,
        help="stop the background stream after this long in any case",
    )
    parser.add_argument(
        "--max-s",
        type=float,
        default=None,
        help="stop measuring after this long (default: no limit; 120 with --under-load, "
        "where a backlog can make every click slow)",
    )
    args = parser.parse_args(argv)
    n_clicks = args.clicks or (1000 if args.quick else 3000)
    max_s = args.max_s if args.max_s is not None else (120.0 if args.under_load > 0 else 1e9)

    import grpc

    from recsys.events.v1 import events_pb2
    from recsys.kafka_codec import encode
    from recsys.kafka_io import make_producer
    from recsys.recommender.v1 import recommender_pb2 as pb
    from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc

    rng = random.Random(args.seed)
    latencies: list[float] = []
    reranked = 0
    timeouts = 0
    background: dict[str, Any] = {}
    topic = f"bench.freshness.{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
        work = Path(tmp)
        data = ml100k_split(0.8)
        store = work / "store"
        train_ml100k(data, store)
        users = list(data.log.user_ids)
        with (
            redis_endpoint(work / "redis") as redis_url,
            kafka_endpoint(work / "kafka") as kafka,
            events_service(kafka, redis_url, topic, PREFIX, work),
            recommender(store, redis_url, PREFIX, work, WORKERS=str(args.workers)) as srv,
        ):
            producer = make_producer(kafka.bootstrap, linger_ms=0, client_id="bench-freshness")
            channel = grpc.insecure_channel(srv.target)
            stub = pb_grpc.RecommenderServiceStub(channel)

            def top(user: str) -> list[str]:
                req = pb.RecommendRequest(user_id=user, k=args.k)
                return [i.item_id for i in stub.Recommend(req, timeout=5).items]

            def send(user: str, item: str, n: int) -> None:
                ev = events_pb2.ClickEvent(event_id=f"{topic}-{n}", user_id=user, item_id=item,
                                           event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
                ev.event_time.FromNanoseconds(time.time_ns())
                value, headers = encode(ev)
                producer.send(topic, key=user.encode(), value=value, headers=list(headers))
                producer.flush(10)

            # warm-up: the consumer group join and first fetches are not part of freshness
            send(users[0], "1", -1)
            deadline = time.monotonic() + 60
            while "1" in top(users[0]) and time.monotonic() < deadline:
                time.sleep(0.05)
            if args.under_load > 0:
                from recsys.store import open_store

                ctx = multiprocessing.get_context("spawn")
                stop_bg = ctx.Event()
                sent = ctx.Value("q", 0)
                items = [str(i) for i in data.log.item_ids]
                bg = ctx.Process(target=background_clicks, daemon=True,
                                 args=(kafka.bootstrap, topic, args.under_load,
                                       args.background_max_s, items, stop_bg, sent))  # fmt: skip
                bg.start()
                counters = open_store(redis_url, prefix=PREFIX)
                time.sleep(3.0)  # the stream reaches its rate before the first measured click
                applied_0, sent_0, t_0 = (
                    sum(counters.counters().values()),
                    sent.value,
                    time.monotonic(),
                )
                log(f"background stream at {args.under_load:.0f} events/s: "
                    f"{sent_0} sent so far")  # fmt: skip
            log(f"pipeline warm; measuring {n_clicks} clicks")
            started = time.perf_counter()
            reported = started
            clicked = 0
            for n in range(n_clicks):
                if time.perf_counter() - started > max_s:
                    log(f"stopping after {max_s:.0f} s: {n} clicks measured")
                    break
                clicked += 1
                user = rng.choice(users)
                before = top(user)
                target = before[0]
                t0 = time.perf_counter()
                send(user, target, n)
                limit = t0 + args.timeout_s
                while True:
                    after = top(user)
                    now = time.perf_counter()
                    if target not in after:
                        latencies.append(now - t0)
                        # re-ranked: the rest of the list is not simply shifted up by one
                        reranked += after[: len(before) - 1] != before[1:]
                        break
                    if now > limit:
                        timeouts += 1
                        break
                if latencies and ((n + 1) % 250 == 0 or time.perf_counter() - reported > 10):
                    reported = time.perf_counter()
                    arr = np.array(latencies) * 1000
                    log(f"  {n + 1} clicks: p50 {np.percentile(arr, 50):.1f} ms, "
                        f"p99 {np.percentile(arr, 99):.1f} ms")  # fmt: skip
            elapsed = time.perf_counter() - started
            if args.under_load > 0:
                window = time.monotonic() - t_0
                applied = sum(counters.counters().values()) - applied_0 - clicked
                produced = sent.value - sent_0
                stop_bg.set()
                bg.join(timeout=60)
                counters.close()
                background = {
                    "background_events_per_s": round(applied / window, 1),
                    "background_produced_per_s": round(produced / window, 1),
                    "background_target_per_s": args.under_load,
                }
                log(f"background: {background}")
            channel.close()
            producer.close(timeout=5)
    arr = np.array(latencies) * 1000
    result: dict[str, Any] = {
        "clicks": len(latencies),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "p90_ms": round(float(np.percentile(arr, 90)), 2),
        "max_ms": round(float(arr.max()), 2),
        "timeouts": timeouts,
        "reranked_fraction": round(reranked / max(len(latencies), 1), 3),
        "workers": args.workers,
        "elapsed_s": round(elapsed, 1),
        **background,
    }
    print(json.dumps(result))
    return 0 if timeouts == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
