"""The Kafka contract every service relies on, checked against a real broker.

Click events keyed by user id, in protobuf or JSON (content-type header), read
by a consumer group that commits only after processing: after a restart the
group resumes exactly after its last commit — nothing lost, nothing redelivered.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.events.v1.events_pb2 import EVENT_TYPE_CLICK, ClickEvent
from recsys.kafka_codec import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, decode, encode
from recsys.kafka_io import ensure_topics, make_consumer, make_producer
from recsys_tools.infra.endpoints import KafkaEndpoint

pytestmark = pytest.mark.integration

USERS = ("u1", "u2", "u3", "u4")


def make_events(start: int, count: int) -> list[ClickEvent]:
    events = []
    for i in range(start, start + count):
        event = ClickEvent(
            event_id=f"e{i:04d}",
            user_id=USERS[i % len(USERS)],
            item_id=f"item{i % 7}",
            event_type=EVENT_TYPE_CLICK,
            event_time=Timestamp(seconds=1_700_000_000 + i),
            session_id=f"s{i % 3}",
        )
        event.context["page"] = "home"
        events.append(event)
    return events


def produce(bootstrap: str, topic: str, events: list[ClickEvent]) -> None:
    producer = make_producer(bootstrap)
    try:
        for i, event in enumerate(events):
            content_type = CONTENT_TYPE_JSON if i % 2 else CONTENT_TYPE_PROTOBUF
            value, headers = encode(event, content_type)
            producer.send(topic, key=event.user_id.encode(), value=value, headers=list(headers))
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def consume(
    consumer: Any, want: int, *, timeout_s: float = 60.0, settle_s: float = 2.0
) -> list[tuple[int, ClickEvent, str]]:
    """Poll until ``want`` records arrived, then keep polling ``settle_s`` to catch extras."""
    got: list[tuple[int, ClickEvent, str]] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    while time.monotonic() < deadline:
        if settle_until is not None and time.monotonic() >= settle_until:
            break
        batches = consumer.poll(timeout_ms=500)
        for records in batches.values():
            for record in records:
                event = decode(record.value, record.headers, ClickEvent)
                content_type = dict(record.headers).get("content-type", b"").decode()
                got.append((record.partition, event, content_type))
                assert record.key == event.user_id.encode()
        if len(got) >= want and settle_until is None:
            settle_until = time.monotonic() + settle_s
    return got


def run_commit_restart_contract(
    kafka: KafkaEndpoint, topic: str, group_id: str, first: int, second: int
) -> None:
    ensure_topics(kafka.bootstrap, {topic: 3})
    batch1 = make_events(0, first)
    produce(kafka.bootstrap, topic, batch1)

    consumer = make_consumer(kafka.bootstrap, group_id, topic, **kafka.consumer_config())
    try:
        got1 = consume(consumer, len(batch1))
        consumer.commit()
    finally:
        consumer.close(autocommit=False)
    assert sorted(e.event_id for _, e, _ in got1) == [e.event_id for e in batch1]
    by_id = {e.event_id: e for e in batch1}
    for _, event, _ in got1:
        assert event == by_id[event.event_id]  # both encodings decode to the same message
    assert {ct for _, _, ct in got1} == {CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON}
    # Keyed by user id: one user's events stay in one partition, in order.
    partitions: dict[str, set[int]] = {}
    for partition, event, _ in got1:
        partitions.setdefault(event.user_id, set()).add(partition)
    assert all(len(p) == 1 for p in partitions.values())
    for user in USERS:
        seq = [e.event_id for _, e, _ in got1 if e.user_id == user]
        assert seq == sorted(seq)

    batch2 = make_events(first, second)
    produce(kafka.bootstrap, topic, batch2)
    restarted = make_consumer(kafka.bootstrap, group_id, topic, **kafka.consumer_config())
    try:
        got2 = consume(restarted, len(batch2), settle_s=3.0)
        restarted.commit()
    finally:
        restarted.close(autocommit=False)
    ids2 = [e.event_id for _, e, _ in got2]
    assert sorted(ids2) == [e.event_id for e in batch2], "lost or redelivered records"


def test_committed_offsets_survive_consumer_restart_without_loss_or_redelivery(
    kafka: KafkaEndpoint, topic: str, group_id: str
) -> None:
    run_commit_restart_contract(kafka, topic, group_id, first=24, second=10)


@pytest.mark.tansu
def test_tansu_round_trips_records_through_a_consumer_group(
    tansu: KafkaEndpoint, topic: str, group_id: str
) -> None:
    ensure_topics(tansu.bootstrap, {topic: 3})
    events = make_events(0, 6)
    produce(tansu.bootstrap, topic, events)
    consumer = make_consumer(tansu.bootstrap, group_id, topic, **tansu.consumer_config())
    try:
        got = consume(consumer, len(events), timeout_s=45.0, settle_s=0.5)
        consumer.commit()
    finally:
        consumer.close(autocommit=False)
    assert sorted(e.event_id for _, e, _ in got) == [e.event_id for e in events]
    assert {e.event_id: e for _, e, _ in got} == {e.event_id: e for e in events}
