"""The sentiment Kafka path end to end: real Kafka, real redis-server, real model.

Feedback records are produced to a per-test topic; the consumer loop (the
service's own ``SentimentConsumer``, in a thread, with the smoke model loaded
in process) scores them, writes the Redis features and produces scored
records. The test reads the output and dead-letter topics back with its own
consumer and the Redis keys with its own client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

pytest.importorskip("tensorflow")

from recsys.feedback.v1 import feedback_pb2
from recsys.kafka_codec import CONTENT_TYPE_JSON, REASON_HEADER, decode, encode
from recsys.kafka_io import ensure_topics, make_consumer, make_producer
from recsys.store import KeySchema, open_store
from recsys_tools.harness import running_loop
from recsys_tools.infra.endpoints import KafkaEndpoint
from services.sentiment.backends import InProcessBackend
from services.sentiment.config import SentimentSettings
from services.sentiment.consumer import SentimentConsumer
from services.sentiment.smoke import train_smoke_model

pytestmark = [pytest.mark.integration, pytest.mark.sentiment]

NEGATIVE_REVIEW = "terrible product, it broke after one day"
POSITIVE_REVIEW = "质量很好，非常满意"
NEUTRAL_NOTE = "my order number is 1234"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> InProcessBackend:
    base = tmp_path_factory.mktemp("sentiment-model")
    train_smoke_model(base, version=5)
    return InProcessBackend(Path(base))


def fb(fid: str, user: str, text: str, item: str | None = None, **kw: Any) -> Any:
    msg = feedback_pb2.CustomerFeedback(
        feedback_id=fid, user_id=user, text=text, source_system="test", **kw
    )
    if item is not None:
        msg.item_id = item
    return msg


def produce(kafka: KafkaEndpoint, topic: str, records: list[Any]) -> None:
    producer = make_producer(kafka.bootstrap, linger_ms=5)
    try:
        for rec in records:
            if isinstance(rec, tuple):  # raw (key, value, headers)
                producer.send(topic, key=rec[0], value=rec[1], headers=rec[2])
                continue
            content_type = CONTENT_TYPE_JSON if rec.feedback_id.endswith("-json") else None
            value, headers = encode(rec, content_type) if content_type else encode(rec)
            producer.send(topic, key=rec.user_id.encode(), value=value, headers=list(headers))
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def read_all(kafka: KafkaEndpoint, topic: str, n: int, timeout_s: float = 60.0) -> list[Any]:
    consumer = make_consumer(
        kafka.bootstrap, None, topic, **kafka.consumer_config(consumer_timeout_ms=1000)
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
    finally:
        consumer.close()
    return out


def wait_for_metadata(kafka: KafkaEndpoint, topic: str, partitions: int) -> None:
    """Block until the brokers report the new topic, so the group join sees its partitions."""
    probe = make_consumer(kafka.bootstrap, None, **kafka.consumer_config())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(probe.partitions_for_topic(topic) or ()) == partitions:
                return
            time.sleep(0.2)
    finally:
        probe.close()
    raise AssertionError(f"topic {topic} has no metadata after 30 s")


@pytest.fixture
def run_loop(
    kafka: KafkaEndpoint,
    redis_url: str,
    topic: str,
    group_id: str,
    key_prefix: str,
    backend: InProcessBackend,
    redis_client: Any,
) -> Iterator[tuple[SentimentSettings, Any]]:
    """Start the consume loop in a thread; yields its settings and a stop() callable."""
    base = SentimentSettings()
    settings = replace(
        base,
        consumer=replace(
            base.consumer,
            bootstrap=kafka.bootstrap,
            topic=topic,
            dlq_topic=f"{topic}.dlq",
            group_id=group_id,
            poll_timeout_ms=200,
        ),
        output_topic=f"{topic}.scored",
        redis_url=redis_url,
        key_prefix=key_prefix,
        max_text_chars=200,
        suppress_ttl_s=3600.0,
        half_life_s=86400.0,
    )
    ensure_topics(
        kafka.bootstrap, {topic: 2, settings.output_topic: 1, settings.consumer.dlq_topic: 1}
    )
    wait_for_metadata(kafka, topic, 2)
    store = open_store(redis_url, prefix=key_prefix)
    producer = make_producer(kafka.bootstrap, client_id="sentiment-test-loop")
    consumer = make_consumer(
        kafka.bootstrap,
        group_id,
        **kafka.consumer_config(
            **{**settings.consumer.consumer_overrides(), "metadata_max_age_ms": 1000}
        ),
    )
    loop = SentimentConsumer(settings, consumer, producer, store, backend)
    try:
        with running_loop(loop):
            yield settings, loop
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        store.close()


def test_feedback_comes_out_scored_and_negative_review_suppresses_the_item(
    kafka: KafkaEndpoint, run_loop: Any, redis_client: Any, key_prefix: str
) -> None:
    settings, loop = run_loop
    records = [
        fb("f1", "alice", NEGATIVE_REVIEW, item="sku-1"),
        fb("f2", "alice", POSITIVE_REVIEW, item="sku-2"),
        fb("f3-json", "bob", NEUTRAL_NOTE, item="sku-3"),
        fb("f4", "bob", NEGATIVE_REVIEW),  # negative, but names no item
    ]
    started = time.time()
    produce(kafka, settings.consumer.topic, records)
    out = read_all(kafka, settings.output_topic, len(records))
    assert len(out) == len(records)
    scored = {}
    for rec in out:
        msg = decode(rec.value, rec.headers, feedback_pb2.ScoredFeedback)
        assert rec.key == msg.feedback.user_id.encode()
        scored[msg.feedback.feedback_id] = msg
    assert set(scored) == {"f1", "f2", "f3-json", "f4"}
    assert scored["f1"].label == feedback_pb2.SENTIMENT_LABEL_NEGATIVE
    assert scored["f2"].label == feedback_pb2.SENTIMENT_LABEL_POSITIVE
    assert scored["f3-json"].label == feedback_pb2.SENTIMENT_LABEL_NEUTRAL
    assert scored["f2"].language == "zh" and scored["f1"].language == "en"
    assert scored["f1"].model_version == "5"
    assert scored["f1"].feedback.item_id == "sku-1"  # the original record travels along
    assert sum(scored["f1"].probabilities.values()) == pytest.approx(1.0, abs=1e-4)

    keys = KeySchema(key_prefix)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and loop.scored < len(records):
        time.sleep(0.1)
    # The negative review of sku-1 hides it from alice, for the configured TTL.
    suppressed = dict(redis_client.zrange(keys.suppressed("alice"), 0, -1, withscores=True))
    assert suppressed.keys() == {b"sku-1"}
    assert started + 3600 - 5 <= suppressed[b"sku-1"] <= time.time() + 3600 + 5
    assert 0 < redis_client.ttl(keys.suppressed("alice")) <= 3600 + 5
    # bob's negative feedback named no item; his neutral note is not negative.
    assert redis_client.zcard(keys.suppressed("bob")) == 0
    # Per-user decayed sentiment: alice had one negative and one positive, bob neutral + negative.
    alice = {k.decode(): float(v) for k, v in redis_client.hgetall(keys.sentiment("alice")).items()}
    bob = {k.decode(): float(v) for k, v in redis_client.hgetall(keys.sentiment("bob")).items()}
    p1, p2 = scored["f1"].probabilities, scored["f2"].probabilities
    expected_alice = ((p1["positive"] - p1["negative"]) + (p2["positive"] - p2["negative"])) / 2
    assert alice["avg"] == pytest.approx(expected_alice, abs=0.01)
    assert alice["n"] == pytest.approx(2.0, abs=0.01)
    assert bob["avg"] < 0


def test_replayed_feedback_is_folded_into_the_average_once(
    kafka: KafkaEndpoint, run_loop: Any, redis_client: Any, key_prefix: str
) -> None:
    """A crash before the commit replays a batch; the replay must not move the average."""
    settings, loop = run_loop
    records = [fb("r1", "dave", NEGATIVE_REVIEW), fb("r2", "dave", POSITIVE_REVIEW)]
    produce(kafka, settings.consumer.topic, records)
    read_all(kafka, settings.output_topic, 2)
    key = KeySchema(key_prefix).sentiment("dave")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and loop.scored < 2:
        time.sleep(0.1)
    before = redis_client.hgetall(key)
    assert float(before[b"n"]) == pytest.approx(2.0, abs=0.01)
    # the same two records again (what a replay after a crash delivers), then a new one
    produce(kafka, settings.consumer.topic, [*records, fb("r3", "dave", POSITIVE_REVIEW)])
    read_all(kafka, settings.output_topic, 5)  # the output topic is at-least-once
    while time.monotonic() < deadline + 30 and loop.scored < 5:
        time.sleep(0.1)
    after = {k.decode(): float(v) for k, v in redis_client.hgetall(key).items()}
    assert after["n"] == pytest.approx(3.0, abs=0.01)  # r1 and r2 once each, plus r3


def test_unscorable_feedback_goes_to_the_dead_letter_topic_with_a_reason(
    kafka: KafkaEndpoint, run_loop: Any
) -> None:
    settings, _ = run_loop
    bad_utf8 = fb("b3", "carol", "abc").SerializeToString().replace(b"abc", b"a\xffc")
    records = [
        fb("b1", "carol", ""),  # empty text
        fb("b2", "carol", "x" * 201),  # over the limit
        (b"carol", bad_utf8, []),  # invalid UTF-8
        fb("", "carol", "no id"),  # missing feedback id
        fb("b5", "", "no user"),  # missing user id
        fb("ok", "carol", NEGATIVE_REVIEW, item="sku-9"),  # the one good record
    ]
    produce(kafka, settings.consumer.topic, records)
    dead = read_all(kafka, settings.consumer.dlq_topic, 5)
    reasons = sorted(dict(rec.headers)[REASON_HEADER].decode().split(":")[0] for rec in dead)
    assert reasons == sorted(
        ["empty_text", "text_too_long", "invalid_utf8", "missing_id", "missing_id"]
    )
    too_long = next(r for r in dead if b"text_too_long" in dict(r.headers)[REASON_HEADER])
    assert b"the limit is 200" in dict(too_long.headers)[REASON_HEADER]
    invalid = next(r for r in dead if b"invalid_utf8" in dict(r.headers)[REASON_HEADER])
    assert invalid.value == bad_utf8  # the original bytes, untouched
    out = read_all(kafka, settings.output_topic, 1)
    assert [decode(r.value, r.headers, feedback_pb2.ScoredFeedback).feedback.feedback_id
            for r in out] == ["ok"]  # fmt: skip


def test_offsets_are_committed_after_the_batch_is_handled(
    kafka: KafkaEndpoint, run_loop: Any
) -> None:
    settings, _ = run_loop
    produce(
        kafka,
        settings.consumer.topic,
        [fb(f"c{i}", f"u{i % 3}", POSITIVE_REVIEW) for i in range(12)],
    )
    read_all(kafka, settings.output_topic, 12)
    # A second client of the group that never subscribes: it reads the group's
    # committed offsets without joining (and so without disturbing the loop).
    probe = make_consumer(kafka.bootstrap, settings.consumer.group_id, **kafka.consumer_config())
    try:
        deadline = time.monotonic() + 30
        committed = 0
        while time.monotonic() < deadline:
            parts = [TopicPartition(settings.consumer.topic, p) for p in (0, 1)]
            committed = sum(probe.committed(tp) or 0 for tp in parts)
            if committed == 12:
                break
            time.sleep(0.2)
    finally:
        probe.close(autocommit=False)
    assert committed == 12


def test_praise_of_a_suppressed_item_lifts_its_suppression(
    kafka: KafkaEndpoint, run_loop: Any, redis_client: Any, key_prefix: str
) -> None:
    """Regression: a suppression could only be waited out (30 days by default). Positive
    feedback about the same item, later on the topic, shows it to the user again."""
    settings, loop = run_loop
    key = KeySchema(key_prefix).suppressed("erin")
    complaints = [fb(f"p{n}", "erin", NEGATIVE_REVIEW, item=f"sku-{n + 4}") for n in (1, 2)]
    produce(kafka, settings.consumer.topic, complaints)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and loop.scored < 2:
        time.sleep(0.1)
    assert set(redis_client.zrange(key, 0, -1)) == {b"sku-5", b"sku-6"}
    produce(kafka, settings.consumer.topic, [fb("p3", "erin", POSITIVE_REVIEW, item="sku-5")])
    while time.monotonic() < deadline and loop.scored < 3:
        time.sleep(0.1)
    out = read_all(kafka, settings.output_topic, 3)
    scored = [decode(r.value, r.headers, feedback_pb2.ScoredFeedback) for r in out]
    praise = next(s for s in scored if s.feedback.feedback_id == "p3")
    assert praise.label == feedback_pb2.SENTIMENT_LABEL_POSITIVE
    assert praise.probabilities["positive"] >= settings.suppress_min_probability
    assert set(redis_client.zrange(key, 0, -1)) == {b"sku-6"}
    assert loop.unsuppressed == 1
