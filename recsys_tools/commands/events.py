"""``recsys replay``, ``recsys forget-user`` and ``recsys events`` (run the consumer)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from recsys.kafka_codec import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, TOPIC_CLICKS
from recsys.kafka_io import check_reachable, ensure_topics, make_producer
from recsys.settings import DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_REDIS_URL
from recsys.store.keys import DEFAULT_PREFIX


def _replay(args: argparse.Namespace) -> int:
    from recsys_tools.data.movielens import load_ml100k, read_interactions
    from services.events.replay import ratings_from_interactions, replay

    if args.ratings is not None:
        interactions = read_interactions(Path(args.ratings))
    else:
        interactions = load_ml100k(Path(args.data_dir) if args.data_dir else None).interactions
    ratings = ratings_from_interactions(interactions, args.limit)
    check_reachable(args.bootstrap)
    if args.partitions:
        ensure_topics(args.bootstrap, {args.topic: args.partitions})
    producer = make_producer(args.bootstrap, client_id="recsys-replay", linger_ms=20)
    started = time.perf_counter()
    try:
        sent = replay(
            producer,
            args.topic,
            ratings,
            speedup=None if args.max_speed else args.speedup,
            anchor=args.anchor,
            mapping=args.mapping,
            content_type=CONTENT_TYPE_JSON if args.format == "json" else CONTENT_TYPE_PROTOBUF,
            progress=not args.quiet,
        )
    finally:
        producer.close(timeout=10)
    elapsed = time.perf_counter() - started
    print(f"replayed {sent} events to {args.topic} in {elapsed:.1f} s")
    return 0


def _forget_user(args: argparse.Namespace) -> int:
    from recsys.store import open_store

    store = open_store(args.redis_url, prefix=args.key_prefix)
    try:
        removed = store.forget_user(args.user_id)
    finally:
        store.close()
    print(f"forgot user {args.user_id!r}: {removed} keys deleted")
    return 0


def _events(args: argparse.Namespace) -> int:
    from services.events.__main__ import main

    return main([])


def register(subparsers: Any) -> None:
    env = os.environ
    p = subparsers.add_parser(
        "replay",
        help="produce MovieLens-100K ratings as click events in timestamp order",
        description="Produce MovieLens-100K ratings as click events (see docs/events.md).",
    )
    p.add_argument(
        "--bootstrap", default=env.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP)
    )
    p.add_argument("--topic", default=env.get("EVENTS_TOPIC", TOPIC_CLICKS))
    p.add_argument("--data-dir", default=None, help="data cache root (default: RECSYS_DATA_DIR)")
    p.add_argument("--ratings", default=None, help="a ml-100k.inter file instead of the cache")
    p.add_argument("--limit", type=int, default=None, help="only the first N ratings in time")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speedup", type=float, default=3600.0,
                       help="replay S times faster than real time (default 3600)")  # fmt: skip
    speed.add_argument("--max-speed", action="store_true", help="as fast as possible")
    p.add_argument("--anchor", type=float, default=None,
                   help="with --max-speed: unix time of the last rating (default now)")  # fmt: skip
    p.add_argument("--mapping", choices=("rating", "implicit"), default="rating")
    p.add_argument("--format", choices=("protobuf", "json"), default="protobuf")
    p.add_argument("--partitions", type=int, default=6,
                   help="create the topic with N partitions if missing (0: never)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)

    f = subparsers.add_parser("forget-user", help="delete every Redis key of one user (privacy)")
    f.add_argument("user_id")
    f.add_argument("--redis-url", default=env.get("REDIS_URL", DEFAULT_REDIS_URL))
    f.add_argument("--key-prefix", default=env.get("REDIS_KEY_PREFIX", DEFAULT_PREFIX))
    f.set_defaults(func=_forget_user)

    e = subparsers.add_parser(
        "events", help="run the events consumer (configured by environment, see docs/events.md)"
    )
    e.set_defaults(func=_events)
