"""Streaming replay through the real pipeline: Kafka → events service → Redis → gRPC.

The model issue's replay protocol (services/recommender/evaluation/replay.py: ``replay``, variant
``als_foldin``): ALS is trained on the first half of ML-100K in time order; the second half
is replayed in time order, and before each event its user gets a top-10 (training history
and the events replayed so far folded in, seen items excluded); a hit is the event's item
being in that list. Here every event goes through the deployment instead: it is produced to
Kafka as a rating event, applied to Redis by ``python -m services.events``, and the top-10
comes from ``Recommend`` over gRPC (``python -m services.recommender``).

Only a user's own events change that user's fold-in, so users advance in waves: each wave
asks for the next event of every user with events left (concurrently), produces those
events, and waits until the events service has applied them all. Per user the order is
exactly the offline one. The offline figure is computed here, in-process, with the same
served model on the same events, so the two HR@10 differ only by what the pipeline does
differently. The known difference: a user with no history at all gets the live trending
list from Redis where the offline protocol uses training popularity (``cold_start_events``
counts these events).

    python -m bench.replay_pipeline [--quick] [--users N]

Ends with one JSON line: {"events", "hr10_pipeline", "hr10_offline", "difference", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.recommender_common import (
    Ml100k,
    applied_events,
    kafka_endpoint,
    log,
    ml100k_split,
    recommender,
    redis_endpoint,
    train_ml100k,
)
from recsys_tools.harness import events_service

PREFIX = "bench-replay"
K = 10


def offline_hr(model: Any, data: Ml100k, events: list[int]) -> tuple[float, int]:
    """The ``als_foldin`` replay of services.recommender.evaluation, on ``events`` only."""
    lg = data.log
    replayed: dict[str, dict[str, float]] = defaultdict(dict)
    hits = 0
    for e in events:
        user, item = lg.user_ids[int(lg.users[e])], lg.item_ids[int(lg.items[e])]
        new = replayed[user]
        merged = dict(model.user_history(user))
        for i, w in new.items():
            merged[i] = merged.get(i, 0.0) + w
        hits += item in model.recommend(user, merged, K, with_reasons=False).ids
        new[item] = new.get(item, 0.0) + float(lg.ratings[e])
    return hits / max(len(events), 1), len(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a sample of users, about a minute")
    parser.add_argument("--users", type=int, default=None, help="sample size (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    n_users = args.users or (120 if args.quick else None)

    import grpc

    from recsys.events.v1 import events_pb2
    from recsys.kafka_codec import encode
    from recsys.kafka_io import make_producer
    from recsys.recommender.v1 import recommender_pb2 as pb
    from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
    from recsys.redis_io import make_redis
    from services.recommender.model import Model

    data = ml100k_split(0.5)
    lg = data.log
    replay_idx = np.sort(data.rest_idx)
    users_in_replay = sorted({lg.user_ids[int(lg.users[e])] for e in replay_idx})
    if n_users is not None and n_users < len(users_in_replay):
        chosen = set(random.Random(args.seed).sample(users_in_replay, n_users))
    else:
        chosen = set(users_in_replay)
    events = [int(e) for e in replay_idx if lg.user_ids[int(lg.users[e])] in chosen]
    queues: dict[str, deque[int]] = defaultdict(deque)
    for e in events:
        queues[lg.user_ids[int(lg.users[e])]].append(e)
    log(f"replaying {len(events)} events of {len(queues)} users")

    topic = f"bench.replay.{int(time.time())}"
    hits = 0
    reasons: dict[str, int] = defaultdict(int)
    waves = 0
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)
        store = work / "store"
        train_ml100k(data, store)
        model = Model.load(store)
        started = time.perf_counter()
        hr_offline, _ = offline_hr(model, data, events)
        log(f"offline HR@10 {hr_offline:.4f} ({time.perf_counter() - started:.1f}s)")
        with (
            redis_endpoint(work / "redis") as redis_url,
            kafka_endpoint(work / "kafka") as kafka,
            events_service(kafka, redis_url, topic, PREFIX, work),
            recommender(
                store, redis_url, PREFIX, work, WORKERS=str(args.workers), MAX_K=str(K)
            ) as srv,  # fmt: skip
        ):
            producer = make_producer(kafka.bootstrap, linger_ms=2, client_id="bench-replay")
            redis = make_redis(redis_url)
            channels = [grpc.insecure_channel(srv.target,
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                        for _ in range(4)]  # fmt: skip
            stubs = [pb_grpc.RecommenderServiceStub(c) for c in channels]

            def ask(job: tuple[int, str, str]) -> tuple[bool, str]:
                n, user, item = job
                req = pb.RecommendRequest(user_id=user, k=K)
                resp = stubs[n % len(stubs)].Recommend(req, timeout=10)
                reason = pb.Reason.Name(resp.items[0].reason) if resp.items else "EMPTY"
                return item in [i.item_id for i in resp.items], reason

            # ML-100K is from 1997-98; the events service rejects pre-2000 times, so the
            # stream is shifted to end a minute ago (as `recsys replay` does)
            shift = int(time.time()) - 60 - int(lg.timestamps.max())
            produced = 0
            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                while queues:
                    wave = [(user, q.popleft()) for user, q in list(queues.items())]
                    for user in [u for u, q in queues.items() if not q]:
                        del queues[user]
                    jobs = [(n, user, lg.item_ids[int(lg.items[e])])
                            for n, (user, e) in enumerate(wave)]  # fmt: skip
                    for hit, reason in pool.map(ask, jobs):
                        hits += hit
                        reasons[reason] += 1
                    for user, e in wave:
                        ev = events_pb2.ClickEvent(
                            event_id=f"replay-{e}", user_id=user,
                            item_id=lg.item_ids[int(lg.items[e])],
                            event_type=events_pb2.EVENT_TYPE_RATING, value=float(lg.ratings[e]),
                        )  # fmt: skip
                        ev.event_time.FromSeconds(int(lg.timestamps[e]) + shift)
                        value, headers = encode(ev)
                        producer.send(topic, key=user.encode(), value=value,
                                      headers=list(headers))  # fmt: skip
                    producer.flush(30)
                    produced += len(wave)
                    deadline = time.monotonic() + 60
                    while applied_events(redis, PREFIX) < produced:
                        if time.monotonic() > deadline:
                            raise RuntimeError("events service stopped applying events")
                        time.sleep(0.002)
                    waves += 1
                    if waves % 50 == 0:
                        log(f"  wave {waves}: {produced}/{len(events)} events, "
                            f"HR@10 so far {hits / produced:.4f}")  # fmt: skip
            elapsed = time.perf_counter() - started
            for c in channels:
                c.close()
            producer.close(timeout=5)
            redis.close()
    hr_pipeline = hits / max(len(events), 1)
    result = {
        "events": len(events),
        "users": len(chosen),
        "hr10_pipeline": round(hr_pipeline, 4),
        "hr10_offline": round(hr_offline, 4),
        "difference": round(hr_pipeline - hr_offline, 4),
        "within_0_01": abs(hr_pipeline - hr_offline) <= 0.01,
        "cold_start_events": reasons.get("REASON_TRENDING", 0)
        + reasons.get("REASON_POPULARITY", 0),
        "waves": waves,
        "elapsed_s": round(elapsed, 1),
        "events_per_s": round(len(events) / elapsed, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
