"""``recsys replay``, ``recsys forget-user``, ``recsys unsuppress`` and ``recsys events``
(run the consumer)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from recsys.kafka_codec import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, TOPIC_CLICKS
from recsys.kafka_io import check_reachable, ensure_topics, make_producer
from recsys.settings import DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_REDIS_URL, load_kafka_security
from recsys.store.keys import DEFAULT_PREFIX


def _replay(args: argparse.Namespace) -> int:
    from recsys_tools.data.movielens import load_ml100k, read_interactions
    from services.events.replay import ratings_from_interactions, replay

    mapping, source = args.mapping, "ml100k"
    if args.log is not None:
        from recsys_tools.data.interactions import parse_columns, read_log
        from services.events.replay import ratings_from_log

        data, _ = read_log(args.log, parse_columns(args.columns), progress=not args.quiet)
        ratings = ratings_from_log(data.users, data.items, data.times, data.events)
        ratings = ratings[: args.limit] if args.limit is not None else ratings
        mapping, source = "log", args.source
    elif args.ratings is not None:
        ratings = ratings_from_interactions(read_interactions(Path(args.ratings)), args.limit)
    else:
        interactions = load_ml100k(Path(args.data_dir) if args.data_dir else None).interactions
        ratings = ratings_from_interactions(interactions, args.limit)
    # The same KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* login as the services (docs/operations.md).
    security = load_kafka_security(os.environ)
    check_reachable(args.bootstrap, security=security)
    if args.partitions:
        ensure_topics(args.bootstrap, {args.topic: args.partitions}, security=security)
    producer = make_producer(
        args.bootstrap, security=security, client_id="recsys-replay", linger_ms=20
    )
    started = time.perf_counter()
    try:
        sent = replay(
            producer,
            args.topic,
            ratings,
            speedup=None if args.max_speed else args.speedup,
            anchor=args.anchor,
            mapping=mapping,
            source=source,
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
    print(
        f"forgot user {args.user_id!r}: {removed} keys deleted and the id recorded as "
        "forgotten (anonymous in every answer from now on; left out of the next "
        "`recsys train`). Still holding the user's data until then: the Kafka topics (until "
        "their retention passes) and the published models (until the next training)."
    )
    return 0


def _unsuppress(args: argparse.Namespace) -> int:
    from recsys.store import open_store

    store = open_store(args.redis_url, prefix=args.key_prefix)
    try:
        lifted = store.unsuppress(args.user, args.item)
    finally:
        store.close()
    if lifted:
        print(f"item {args.item!r} may be recommended to user {args.user!r} again")
    else:
        print(f"user {args.user!r} had no suppression of item {args.item!r} in force")
    return 0


def _events(args: argparse.Namespace) -> int:
    from services.events.__main__ import main

    return main([])


def register(subparsers: Any) -> None:
    env = os.environ
    p = subparsers.add_parser(
        "replay",
        help="produce MovieLens-100K ratings or an imported log as click events in time order",
        description="Produce MovieLens-100K ratings, or an interaction log (--log), as click "
        "events (see docs/events.md).",
    )
    p.add_argument(
        "--bootstrap", default=env.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP)
    )
    p.add_argument("--topic", default=env.get("EVENTS_TOPIC", TOPIC_CLICKS))
    p.add_argument("--data-dir", default=None, help="data cache root (default: RECSYS_DATA_DIR)")
    p.add_argument("--ratings", default=None, help="a ml-100k.inter file instead of the cache")
    p.add_argument("--log", default=None,
                   help="replay an interaction log instead (`recsys import` output, or any "
                   "log with --columns); event types by name, else clicks")  # fmt: skip
    p.add_argument("--columns", default=None,
                   help="with --log: user=COL,item=COL,time=COL[,event=COL] (default: the "
                   "normalised columns)")  # fmt: skip
    p.add_argument("--source", default="log",
                   help="with --log: event ids are <source>-<row> (default log)")  # fmt: skip
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

    f = subparsers.add_parser(
        "forget-user",
        help="forget one user (privacy): delete their Redis keys and record them as forgotten",
        description="Delete every Redis key of the user and record the id as forgotten: the "
        "recommender answers for it as for an anonymous visitor at once, and `recsys train` "
        "leaves it out (docs/redis-schema.md, 'Forgetting a user').",
    )
    f.add_argument("user_id")
    f.add_argument("--redis-url", default=env.get("REDIS_URL", DEFAULT_REDIS_URL))
    f.add_argument("--key-prefix", default=env.get("REDIS_KEY_PREFIX", DEFAULT_PREFIX))
    f.set_defaults(func=_forget_user)

    u = subparsers.add_parser(
        "unsuppress",
        help="lift a user's suppression of an item (support staff)",
        description="Negative feedback about an item hides it from the user for "
        "SENTIMENT_SUPPRESS_TTL_S; this shows it again at once (docs/sentiment.md).",
    )
    u.add_argument("--user", required=True, help="user id")
    u.add_argument("--item", required=True, help="item id")
    u.add_argument("--redis-url", default=env.get("REDIS_URL", DEFAULT_REDIS_URL))
    u.add_argument("--key-prefix", default=env.get("REDIS_KEY_PREFIX", DEFAULT_PREFIX))
    u.set_defaults(func=_unsuppress)

    e = subparsers.add_parser(
        "events", help="run the events consumer (configured by environment, see docs/events.md)"
    )
    e.set_defaults(func=_events)
