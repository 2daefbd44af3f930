"""End-to-end events/s (Kafka -> Redis features) vs the raw kafka-python consume rate.

For each broker (the real Apache Kafka and Tansu, started here from
``recsys_tools.infra``), the same synthetic click records are produced once, then
read twice in this one process, each time by a fresh consumer group with the
same client settings: by a bare kafka-python loop (the raw rate), by the events
service's own batch path (decode, validate, one Redis pipeline of scripts,
commit), then by the bare loop again; the faster raw pass is the baseline (a
freshly started broker slows whichever pass comes first). The whole process
runs with the events service's GC settings (``recsys.runtime.settle_heap``). Rates are measured
from the first record polled to the last one handled, so group-join time is
left out of all three.

    python -m bench.events_throughput [--quick] [--events N] [--brokers apache,tansu]
    python -m bench.events_throughput --quick --null-store   # diagnostic: no Redis writes

Redis's cost of the service pass comes from Redis itself: ``INFO commandstats`` is reset
when the pass starts, and ``redis_server_us_per_event`` is the server time of the store's
commands (the batch scripts' ``EVALSHA``, which includes the commands they run) per event;
``redis_cpu_us_per_event`` is the Redis main thread's CPU time (``INFO cpu``) over the same
pass. On a loaded machine the first is inflated by the time Redis waits for a core; the
second much less.

Ends with one JSON line (the first broker's figures at top level, every broker under
"brokers").
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import encode
from recsys.kafka_io import ensure_topics, make_consumer, make_producer

PARTITIONS = 4


def synthetic_events(n: int, users: int = 5000, items: int = 2000, seed: int = 1) -> list[bytes]:
    """Protobuf click events: skewed items, four event types, times in the last n/1000 s."""
    rng = random.Random(seed)
    kinds = [
        events_pb2.EVENT_TYPE_VIEW,
        events_pb2.EVENT_TYPE_CLICK,
        events_pb2.EVENT_TYPE_ADD_TO_CART,
        events_pb2.EVENT_TYPE_PURCHASE,
    ]
    base = time.time() - n / 1000.0 - 60
    out = []
    for i in range(n):
        ev = events_pb2.ClickEvent(
            event_id=f"bench-{seed}-{i}",
            user_id=f"u{rng.randrange(users)}",
            item_id=f"i{int(items * rng.random() ** 3)}",
            event_type=rng.choice(kinds),
        )
        ev.event_time.FromNanoseconds(int((base + i / 1000.0) * 1e9))
        out.append(ev.SerializeToString())
    return out


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> float:
    producer = make_producer(bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1,
                             max_in_flight_requests_per_connection=5)  # fmt: skip
    _, headers = encode(events_pb2.ClickEvent())
    started = time.perf_counter()
    try:
        for value in payloads:
            key = events_pb2.ClickEvent.FromString(value).user_id.encode()
            producer.send(topic, key=key, value=value, headers=list(headers))
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return time.perf_counter() - started


def raw_consume(
    bootstrap: str, topic: str, n: int, overrides: dict[str, Any]
) -> tuple[float, float]:
    """Records/s of a bare poll loop, and this process's CPU seconds per record."""
    consumer = make_consumer(bootstrap, f"bench-raw-{time.time_ns()}", topic, **overrides)
    count = 0
    first = cpu = 0.0
    try:
        deadline = time.monotonic() + 300
        while count < n and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=overrides["max_poll_records"])
            for batch in polled.values():
                if batch and not first:
                    first = time.perf_counter()
                    cpu = time.process_time()
                count += len(batch)
        elapsed = time.perf_counter() - first
        cpu = time.process_time() - cpu
    finally:
        consumer.close(autocommit=False)
    if count < n:
        raise RuntimeError(f"raw consumer read {count} of {n} records")
    return n / elapsed, cpu / n


class NullWrites:
    """Diagnostic (``--null-store``): the real store with its event writes replaced by nothing.

    What the service's loop costs without Redis: decode, validate, plan, commit. The gap
    between this and the real run is Redis's share (its single thread on the same cores).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def begin_apply(self, events: Any, now: float | None = None) -> Any:
        from recsys.store.model import ApplyResult, DoneApply

        return DoneApply(ApplyResult(len(events), len(events), len(events)))

    def apply_events(self, events: Any, now: float | None = None) -> Any:
        return self.begin_apply(events, now).result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def redis_server_time(client: Any) -> tuple[float, float]:
    """Redis's own accounting so far: microseconds its commands took (the sum over
    ``INFO commandstats`` of the top-level commands: a script's ``EVALSHA`` includes the
    commands it runs, which are counted again under their own names and so left out),
    and its main thread's CPU seconds (``INFO cpu``: robust to other load on the machine,
    which inflates the first)."""
    stats = client.info("commandstats")
    usec = sum(v["usec"] for k, v in stats.items() if k.startswith(TOP_LEVEL))
    cpu = client.info("cpu")
    main = cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]
    return float(usec), float(main)


#: commands the store sends itself (the batch script's inner commands are not among them)
TOP_LEVEL = ("cmdstat_evalsha", "cmdstat_script", "cmdstat_ping", "cmdstat_hello")


def service_consume(
    bootstrap: str, redis_url: str, topic: str, n: int, overrides: dict[str, Any],
    null_store: bool = False,
) -> tuple[float, int, float, dict[str, float]]:  # fmt: skip
    """Events/s through the service's loop, Redis round trips made, CPU seconds per event,
    and Redis's server time and main-thread CPU per event over the same window."""
    from services.events.__main__ import make_store
    from services.events.config import load_settings
    from services.events.consumer import EventsConsumer

    group = f"bench-events-{time.time_ns()}"
    settings = load_settings(
        {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDIS_URL": redis_url, "EVENTS_TOPIC": topic,
         "EVENTS_GROUP_ID": group, "REDIS_KEY_PREFIX": group,
         "EVENTS_MAX_POLL_RECORDS": str(overrides["max_poll_records"])}
    )  # fmt: skip
    store: Any = make_store(settings)
    if null_store:
        store = NullWrites(store)
    trips_before = store.round_trips
    admin = store.client
    admin.config_resetstat()  # INFO commandstats from zero: this window only
    cpu_before = redis_server_time(admin)[1]
    consumer = make_consumer(bootstrap, group, **overrides)
    producer = make_producer(bootstrap)
    loop = EventsConsumer(settings, consumer, producer, store)
    loop.subscribe()
    stop = threading.Event()
    handled = 0
    first = cpu = 0.0
    try:
        deadline = time.monotonic() + 300
        while handled < n and time.monotonic() < deadline:
            got = loop.step(stop)  # the service's own loop body: poll N+1 while Redis applies N
            if got and not first:
                first = loop.polled_at
                cpu = time.process_time()
            handled += got
        loop.finish(stop)
        elapsed = time.perf_counter() - first
        cpu = time.process_time() - cpu
        trips = store.round_trips - trips_before
        usec, cpu_after = redis_server_time(admin)
        server = {
            "redis_server_us_per_event": round(usec / n, 2),
            "redis_cpu_us_per_event": round((cpu_after - cpu_before) * 1e6 / n, 2),
        }
        if loop.applied + loop.duplicates + loop.dead_lettered < n:
            raise RuntimeError(f"service handled {handled} of {n} records")
        if loop.dead_lettered:
            raise RuntimeError(f"{loop.dead_lettered} bench records were dead-lettered")
        keys = list(store.client.scan_iter(match=f"{group}:*", count=5000))
        for start in range(0, len(keys), 5000):
            store.client.delete(*keys[start : start + 5000])
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        store.close()
    return n / elapsed, trips, cpu / n, server


def run_broker(
    kind: str, payloads: list[bytes], redis_url: str, work: Path, null_store: bool = False
) -> dict[str, Any]:
    from recsys_tools.infra.launcher import start_kafka

    endpoint = start_kafka(kind, work / kind)  # type: ignore[arg-type]
    try:
        topic = f"bench.clicks.{time.time_ns()}"
        ensure_topics(endpoint.bootstrap, {topic: PARTITIONS})
        produce_s = produce(endpoint.bootstrap, topic, payloads)
        overrides = endpoint.consumer_config(max_poll_records=2000, client_id="bench")
        first = raw_consume(endpoint.bootstrap, topic, len(payloads), overrides)
        rate, trips, cpu, server = service_consume(
            endpoint.bootstrap, redis_url, topic, len(payloads), overrides, null_store
        )
        # The raw loop again after the service: a freshly started broker (JIT, page cache)
        # slows the first pass; the faster of the two is the baseline, never the slower.
        second = raw_consume(endpoint.bootstrap, topic, len(payloads), overrides)
        raw, raw_cpu = max(first, second)
    finally:
        if endpoint.server is not None:
            endpoint.server.stop()
    n = len(payloads)
    return {
        "broker": kind,
        **({"null_store": True} if null_store else {}),
        "events": n,
        "events_per_s": round(rate, 1),
        "raw_consume_per_s": round(raw, 1),
        "raw_passes_per_s": [round(first[0], 1), round(second[0], 1)],
        "ratio": round(rate / raw, 3),
        "redis_round_trips_per_1000": round(trips * 1000.0 / n, 3),
        "produce_per_s": round(n / produce_s, 1),
        # CPU time of this process per record: robust to other load on the machine
        "raw_cpu_us_per_event": round(raw_cpu * 1e6, 1),
        "service_cpu_us_per_event": round(cpu * 1e6, 1),
        # Redis's own figures for the service pass: server time of the store's commands
        # (INFO commandstats, reset at the start of the pass) and its main thread's CPU
        **server,
    }


def main(argv: list[str] | None = None) -> int:
    from recsys.runtime import settle_heap

    # The service process's GC settings, for the whole bench process: both the bare loop
    # and the service's loop run under them, so the comparison stays like for like.
    settle_heap()
    parser = argparse.ArgumentParser(prog="python -m bench.events_throughput")
    parser.add_argument("--quick", action="store_true", help="30k events (under a minute)")
    parser.add_argument("--events", type=int, default=None, help="default 200k (30k quick)")
    parser.add_argument("--brokers", default="apache,tansu")
    parser.add_argument(
        "--null-store", action="store_true",
        help="diagnostic: skip the Redis writes (the loop's own ceiling; not the headline)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    n = args.events or (30_000 if args.quick else 200_000)
    from recsys_tools.infra.launcher import start_redis

    payloads = synthetic_events(n)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        work = Path(tmp)
        redis = start_redis(work / "redis", appendonly=False)
        try:
            for kind in [b.strip() for b in args.brokers.split(",") if b.strip()]:
                result = run_broker(kind, payloads, redis.url, work, args.null_store)
                print(json.dumps(result), file=sys.stderr)
                runs.append(result)
        finally:
            if redis.server is not None:
                redis.server.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    headline = {**runs[0], "peak_rss_mb": round(peak_mb, 1), "brokers": runs}
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
