"""Freshness: from producing a click to Kafka until Recommend for that user reflects it.

The whole pipeline runs: Kafka, the events service (``python -m services.events``), a
redis-server, and the recommender (``python -m services.recommender``, two workers) serving
an ALS model trained on ML-100K. For each click, a random user's current top item is
clicked: the click is produced (acks=all, no linger) at t0, then ``Recommend`` is polled
back to back until that item has left the list and the list differs from before: t1.
Freshness = t1 - t0, so it includes the produce round trip, the consumer's fetch, the
Redis script, and one request. The clicks are sequential (one in flight), which measures
the latency of the pipeline, not its throughput (see bench/events_throughput.py).

    python -m bench.freshness [--quick] [--clicks N]

Ends with one JSON line: {"clicks", "p50_ms", "p99_ms", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--clicks", type=int, default=None, help="default 1000 (quick) / 3000")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=10.0, help="give up on one click")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    n_clicks = args.clicks or (1000 if args.quick else 3000)

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
            log(f"pipeline warm; measuring {n_clicks} clicks")
            started = time.perf_counter()
            for n in range(n_clicks):
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
                if (n + 1) % 250 == 0:
                    arr = np.array(latencies) * 1000
                    log(f"  {n + 1} clicks: p50 {np.percentile(arr, 50):.1f} ms, "
                        f"p99 {np.percentile(arr, 99):.1f} ms")  # fmt: skip
            elapsed = time.perf_counter() - started
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
    }
    print(json.dumps(result))
    return 0 if timeouts == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
