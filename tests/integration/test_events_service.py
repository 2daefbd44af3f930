"""The events service end to end: real Kafka, real redis-server, the consumer as a subprocess.

Each test computes the expected features itself, from the records it produced,
with plain Python (no code of the service), and compares them with a dump of
the Redis keys once every event has been applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import REASON_HEADER, encode
from recsys.kafka_io import ensure_topics, make_consumer, make_producer
from recsys.store import KeySchema
from recsys_tools.harness import Service, free_port, kafka_env, wait_for

# The independent computation of the features, and the dump in comparable form (keys
# renamed to P:...), shared with the fault suite.
from recsys_tools.harness.features import (
    HALF_LIFE,
    RECENT_CAP,
    expected_event_features,
    normalised_dump,
)
from recsys_tools.infra.endpoints import KafkaEndpoint

pytestmark = pytest.mark.integration

WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
TYPES = {
    events_pb2.EVENT_TYPE_VIEW: "view",
    events_pb2.EVENT_TYPE_CLICK: "click",
    events_pb2.EVENT_TYPE_ADD_TO_CART: "add_to_cart",
    events_pb2.EVENT_TYPE_PURCHASE: "purchase",
    events_pb2.EVENT_TYPE_RATING: "rating",
}


# --- producing ----------------------------------------------------------------------------
def synthetic_events(n: int, users: int = 60, items: int = 40, seed: int = 7) -> list[Any]:
    """Deterministic click stream: user i % users, items skewed, times increasing."""
    import random

    rng = random.Random(seed)
    base = time.time() - n - 100
    kinds = list(TYPES)[:4]
    out = []
    for i in range(n):
        ev = events_pb2.ClickEvent(
            event_id=f"ev-{seed}-{i}",
            user_id=f"user{rng.randrange(users)}",
            item_id=f"item{int(items * rng.random() ** 2)}",
            event_type=rng.choice(kinds),
        )
        ev.event_time.FromNanoseconds(int((base + i) * 1e9))
        out.append(ev)
    return out


def produce(kafka: KafkaEndpoint, topic: str, events: list[Any], pace_s: float = 0.0) -> None:
    producer = make_producer(kafka.bootstrap, linger_ms=10)
    try:
        for i, ev in enumerate(events):
            if isinstance(ev, tuple):  # raw (key, value) bytes
                producer.send(topic, key=ev[0], value=ev[1])
            else:
                value, headers = encode(ev)
                producer.send(topic, key=ev.user_id.encode(), value=value, headers=list(headers))
            if pace_s and i % 100 == 99:
                producer.flush()
                time.sleep(pace_s)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


# --- the expected features, computed independently ---------------------------------------
def assert_same_features(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        if key.endswith(":trending") or key.endswith(":weights"):
            assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        elif key.endswith(":recent"):
            assert [{**r, "ts": pytest.approx(r["ts"])} for r in value] == actual[key], key
        else:
            assert actual[key] == value, key


# --- the consumer as a subprocess --------------------------------------------------------
@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Started events services (``python -m services.events``); SIGKILLed in teardown."""
    started: list[Service] = []

    def make(kafka: KafkaEndpoint, redis_url: str, topic: str, group: str, prefix: str,
             **extra: str) -> Service:  # fmt: skip
        env = {
            "REDIS_URL": redis_url,
            "EVENTS_TOPIC": topic,
            "EVENTS_DLQ_TOPIC": f"{topic}.dlq",
            "EVENTS_GROUP_ID": group,
            "REDIS_KEY_PREFIX": prefix,
            "EVENTS_CREATE_TOPICS": "false",
            "EVENTS_POLL_TIMEOUT_MS": "200",
            "EVENTS_MAX_POLL_RECORDS": "200",
            "EVENTS_BACKOFF_MAX_S": "1",
            "EVENTS_HEALTH_CHECK_INTERVAL_S": "0.5",
            "EVENT_WEIGHTS": ",".join(f"{k}={v}" for k, v in WEIGHTS.items()),
            "RECENT_CAP": str(RECENT_CAP),
            "TRENDING_HALF_LIFE_S": str(HALF_LIFE),
            # a SIGKILLed member's partitions move after the session timeout: keep it short
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            **kafka_env(kafka),
            **extra,
        }
        consumer = Service("events", ["services.events"], env,
                           log_path=tmp_path / f"consumer{len(started)}.log")  # fmt: skip
        consumer.start()
        started.append(consumer)
        return consumer

    yield make
    for consumer in started:
        if consumer.running():
            consumer.kill()


def applied_count(client: Any, prefix: str) -> int:
    return sum(int(v) for v in client.hvals(KeySchema(prefix).counters()))


def make_topic(kafka: KafkaEndpoint, topic: str, partitions: int) -> None:
    ensure_topics(kafka.bootstrap, {topic: partitions, f"{topic}.dlq": 1})
    probe = make_consumer(kafka.bootstrap, None, **kafka.consumer_config())
    try:
        wait_for(lambda: len(probe.partitions_for_topic(topic) or ()) == partitions, 30,
                 f"metadata of {topic}")  # fmt: skip
    finally:
        probe.close()


# --- tests -------------------------------------------------------------------------------
def test_replaying_a_movielens_subset_yields_independently_computed_features(
    kafka: KafkaEndpoint, redis_url: str, redis_client: Any, topic: str, group_id: str,
    key_prefix: str, consumers: Callable[..., Service],
) -> None:  # fmt: skip
    from recsys_tools.data.fetch import fetch
    from recsys_tools.data.movielens import load_ml100k
    from services.events.replay import ratings_from_interactions, replay

    fetch(["ml-100k"], progress=False)  # a no-op once cached and verified
    ratings = ratings_from_interactions(load_ml100k().interactions, limit=3000)
    make_topic(kafka, topic, 3)
    anchor = time.time() - 60
    producer = make_producer(kafka.bootstrap)
    try:
        sent = replay(producer, topic, ratings, anchor=anchor, progress=False)
    finally:
        producer.close(timeout=10)
    assert sent == 3000
    consumer = consumers(kafka, redis_url, topic, group_id, key_prefix)
    wait_for(lambda: applied_count(redis_client, key_prefix) >= 3000, 90, "3000 events",
             consumer.log_text)  # fmt: skip
    assert consumer.stop() == 0
    # the same records, read back from the topic
    reader = make_consumer(kafka.bootstrap, None, topic, **kafka.consumer_config(
        consumer_timeout_ms=3000))  # fmt: skip
    try:
        produced = [events_pb2.ClickEvent.FromString(r.value) for r in reader]
    finally:
        reader.close()
    assert len(produced) == 3000
    produced.sort(key=lambda e: (e.event_time.seconds, e.event_time.nanos))
    assert_same_features(
        normalised_dump(redis_client, key_prefix), expected_event_features(produced, "P")
    )
    assert '"serving": true' in consumer.log_text()


def test_sigkill_mid_stream_then_restart_equals_an_uninterrupted_run(
    kafka: KafkaEndpoint, redis_url: str, redis_client: Any, topic: str, group_id: str,
    key_prefix: str, consumers: Callable[..., Service],
) -> None:  # fmt: skip
    n = 6000
    events = synthetic_events(n)
    make_topic(kafka, topic, 3)
    produce(kafka, topic, events)
    ref_prefix, kill_prefix = f"{key_prefix}-ref", f"{key_prefix}-kill"
    ref = consumers(kafka, redis_url, topic, f"{group_id}-ref", ref_prefix)
    victim = consumers(kafka, redis_url, topic, f"{group_id}-kill", kill_prefix,
                       EVENTS_MAX_POLL_RECORDS="100")  # fmt: skip
    wait_for(lambda: applied_count(redis_client, kill_prefix) >= n // 3, 60, "a third",
             victim.log_text)  # fmt: skip
    victim.kill()
    at_kill = applied_count(redis_client, kill_prefix)
    assert at_kill < n, "the kill came too late to interrupt the stream"
    restarted = consumers(kafka, redis_url, topic, f"{group_id}-kill", kill_prefix)
    wait_for(lambda: applied_count(redis_client, kill_prefix) >= n, 90, "all events (restart)",
             restarted.log_text)  # fmt: skip
    wait_for(lambda: applied_count(redis_client, ref_prefix) >= n, 60, "all events (reference)",
             ref.log_text)  # fmt: skip
    assert restarted.stop() == 0 and ref.stop() == 0
    killed_dump = normalised_dump(redis_client, kill_prefix)
    ref_dump = normalised_dump(redis_client, ref_prefix)
    assert applied_count(redis_client, kill_prefix) == n
    assert_same_features(killed_dump, ref_dump)
    assert_same_features(ref_dump, expected_event_features(events, "P"))
    for prefix in (ref_prefix, kill_prefix):
        redis_client.delete(*redis_client.scan_iter(match=f"{prefix}:*", count=1000))


def test_two_consumers_share_partitions_and_a_killed_ones_move_to_the_other(
    kafka: KafkaEndpoint, redis_url: str, redis_client: Any, topic: str, group_id: str,
    key_prefix: str, consumers: Callable[..., Service],
) -> None:  # fmt: skip
    n = 5000
    events = synthetic_events(n, users=80, seed=11)
    make_topic(kafka, topic, 4)
    first = consumers(kafka, redis_url, topic, group_id, key_prefix)
    second = consumers(kafka, redis_url, topic, group_id, key_prefix)
    producer = threading.Thread(target=produce, args=(kafka, topic, events, 0.2))
    producer.start()
    try:
        wait_for(lambda: applied_count(redis_client, key_prefix) >= n // 4, 60, "a quarter",
                 lambda: first.log_text() + second.log_text())  # fmt: skip
        wait_for(lambda: "partitions assigned" in first.log_text() and
                 "partitions assigned" in second.log_text(), 30, "both assigned")  # fmt: skip
        second.kill()
        assert applied_count(redis_client, key_prefix) < n, "the kill came after the stream"
    finally:
        producer.join(120)
    wait_for(lambda: applied_count(redis_client, key_prefix) >= n, 120, "all events",
             first.log_text)  # fmt: skip
    assert first.stop() == 0
    assert applied_count(redis_client, key_prefix) == n
    assert_same_features(
        normalised_dump(redis_client, key_prefix), expected_event_features(events, "P")
    )


def test_redis_stopped_and_restarted_mid_stream_loses_no_event(
    kafka: KafkaEndpoint, redis_server_factory: Callable[..., Any], topic: str, group_id: str,
    key_prefix: str, consumers: Callable[..., Service],
) -> None:  # fmt: skip
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from recsys.redis_io import make_redis

    server = redis_server_factory(appendonly=True)
    client = make_redis(server.url)
    n = 4000
    events = synthetic_events(n, seed=5)
    make_topic(kafka, topic, 2)
    port = free_port()
    consumer = consumers(kafka, server.url, topic, group_id, key_prefix, GRPC_PORT=str(port))
    producer = threading.Thread(target=produce, args=(kafka, topic, events, 0.05))
    producer.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)

    def status() -> int:
        try:
            return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status)
        except grpc.RpcError:
            return -1

    try:
        wait_for(lambda: applied_count(client, key_prefix) >= 500, 60, "500 events",
                 consumer.log_text)  # fmt: skip
        wait_for(lambda: status() == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING")
        server.stop()
        wait_for(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, 15,
                 "NOT_SERVING while Redis is down", consumer.log_text)  # fmt: skip
        time.sleep(2)
        server.start()
        wait_for(lambda: applied_count(client, key_prefix) >= n, 120, "all events",
                 consumer.log_text)  # fmt: skip
        wait_for(lambda: status() == health_pb2.HealthCheckResponse.SERVING, 15, "SERVING again")
    finally:
        producer.join(120)
        channel.close()
    assert consumer.stop() == 0
    assert applied_count(client, key_prefix) == n
    assert_same_features(normalised_dump(client, key_prefix), expected_event_features(events, "P"))
    client.close()


def test_generated_bad_payloads_are_dead_lettered_and_good_events_around_them_applied(
    kafka: KafkaEndpoint, redis_url: str, redis_client: Any, topic: str, group_id: str,
    key_prefix: str, consumers: Callable[..., Service],
) -> None:  # fmt: skip
    from event_records import bad_payloads
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    collected: list[list[bytes]] = []

    @settings(max_examples=1, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(bad_payloads(now=time.time()), min_size=300, max_size=300))
    def draw(payloads: list[bytes]) -> None:
        collected.append(payloads)

    draw()
    bad = collected[-1]
    good = synthetic_events(600, seed=3)
    # valid events keyed by another id than their user's: per-user order cannot hold for them
    mis_keyed = [ev.SerializeToString() for ev in synthetic_events(20, seed=4)]
    stream: list[Any] = []
    for i, ev in enumerate(good):
        stream.append(ev)
        if i % 2 == 0:
            stream.append((b"user-bad", bad[i // 2]))
        if i % 30 == 0:
            stream.append((b"not-the-user", mis_keyed[i // 30]))
    bad = [*bad, *mis_keyed]
    make_topic(kafka, topic, 2)
    produce(kafka, topic, stream)
    consumer = consumers(kafka, redis_url, topic, group_id, key_prefix)
    dlq = make_consumer(kafka.bootstrap, None, f"{topic}.dlq",
                        **kafka.consumer_config(consumer_timeout_ms=2000))  # fmt: skip
    dead: list[Any] = []
    deadline = time.monotonic() + 90
    try:
        while len(dead) < len(bad) and time.monotonic() < deadline:
            dead.extend(dlq)
    finally:
        dlq.close()
    wait_for(lambda: applied_count(redis_client, key_prefix) >= len(good), 60, "good events",
             consumer.log_text)  # fmt: skip
    assert consumer.stop() == 0
    assert sorted(r.value for r in dead) == sorted(bad)
    for record in dead:
        reasons = [v.decode() for k, v in record.headers if k == REASON_HEADER]
        assert reasons and reasons[0].split(":")[0] in {
            "decode", "missing_id", "id_too_long", "bad_timestamp", "unknown_type", "bad_value",
            "key_mismatch",
        }  # fmt: skip
    assert sum(r.value in mis_keyed for r in dead) == len(mis_keyed)
    assert all(dict(r.headers)["x-dead-letter-code"] == b"key_mismatch"
               for r in dead if r.value in mis_keyed)  # fmt: skip
    assert_same_features(
        normalised_dump(redis_client, key_prefix), expected_event_features(good, "P")
    )
