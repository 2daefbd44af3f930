"""Pure logic of the events service: decode, validate, weigh, and plan a batch.

No Kafka or Redis here: the consume loop hands in raw records and gets back
the feature events to apply, the records to dead-letter (with a reason), and
the offsets to commit once both are done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtoDecodeError

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import (
    CONTENT_TYPE_HEADER,
    CONTENT_TYPE_PROTOBUF,
    DecodeError,
    RawRecord,
    Rejection,
    decode,
)
from recsys.store.model import FeatureEvent
from services.events.config import ValidationConfig

MIN_EVENT_TIME_S = 946_684_800.0  # 2000-01-01T00:00:00Z

EVENT_TYPE_NAMES: dict[int, str] = {
    events_pb2.EVENT_TYPE_VIEW: "view",
    events_pb2.EVENT_TYPE_CLICK: "click",
    events_pb2.EVENT_TYPE_ADD_TO_CART: "add_to_cart",
    events_pb2.EVENT_TYPE_PURCHASE: "purchase",
    events_pb2.EVENT_TYPE_RATING: "rating",
}

# Reason codes (the metric label); the dead-letter header carries "code: detail".
DECODE = "decode"
MISSING_ID = "missing_id"
ID_TOO_LONG = "id_too_long"
BAD_TIMESTAMP = "bad_timestamp"
UNKNOWN_TYPE = "unknown_type"
BAD_VALUE = "bad_value"
KEY_MISMATCH = "key_mismatch"
REASON_CODES = (
    DECODE, MISSING_ID, ID_TOO_LONG, BAD_TIMESTAMP, UNKNOWN_TYPE, BAD_VALUE, KEY_MISMATCH
)  # fmt: skip


@dataclass(slots=True)
class BatchPlan:
    events: list[FeatureEvent] = field(default_factory=list)
    rejected: list[tuple[RawRecord, Rejection]] = field(default_factory=list)
    # (topic, partition) -> next offset to consume, i.e. the offset to commit.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


def validate(
    message: events_pb2.ClickEvent, now: float, cfg: ValidationConfig
) -> FeatureEvent | Rejection:
    """Turn a decoded message into a FeatureEvent, or say why it can never be applied."""
    limit = cfg.max_id_length
    for name, value in (
        ("event_id", message.event_id),
        ("user_id", message.user_id),
        ("item_id", message.item_id),
    ):
        if not value.strip():
            return Rejection(MISSING_ID, f"{name} is empty")
        if len(value) > limit:
            return Rejection(ID_TOO_LONG, f"{name} has {len(value)} characters (limit {limit})")
    kind = EVENT_TYPE_NAMES.get(message.event_type)
    if kind is None:
        return Rejection(UNKNOWN_TYPE, f"event_type {message.event_type} is not a known type")
    if not message.HasField("event_time"):
        return Rejection(BAD_TIMESTAMP, "event_time is missing")
    ts = message.event_time.seconds + message.event_time.nanos / 1e9
    if ts < MIN_EVENT_TIME_S:
        return Rejection(BAD_TIMESTAMP, f"event_time {ts:.0f} is before 2000-01-01")
    if ts > now + cfg.max_future_skew_s:
        return Rejection(BAD_TIMESTAMP, f"event_time is {ts - now:.0f} s in the future")
    if kind == "rating":
        if not message.HasField("value"):
            return Rejection(BAD_VALUE, "rating event without a value")
        rating = message.value
        if not math.isfinite(rating) or not cfg.rating_min <= rating <= cfg.rating_max:
            return Rejection(
                BAD_VALUE, f"rating {rating} outside [{cfg.rating_min}, {cfg.rating_max}]"
            )
        weight = cfg.rating_weight(rating)
    else:
        weight = cfg.weights[kind]
    return FeatureEvent(message.event_id, message.user_id, message.item_id, kind, weight, ts)


def check_key(key: bytes | None, user_id: str) -> Rejection | None:
    """Why a valid event's record key disqualifies it, or None when the key is its user id.

    One user's events are applied in order because they share a partition, which only
    keying every record by the user id guarantees: a record keyed otherwise, or not at all
    (the producer's partitioner then picks any partition), can be applied before an
    earlier event of the same user on another partition. The check comes last, so a
    record with a defect in its contents is dead-lettered for that defect.
    """
    if key is None:
        return Rejection(KEY_MISMATCH, "the record has no key; key click records by user_id")
    if key != user_id.encode("utf-8"):
        return Rejection(
            KEY_MISMATCH,
            f"the record key {key[:64]!r} is not the user_id {user_id[:64]!r} "
            "(per-user order needs records keyed by user_id)",
        )
    return None


def parse_record(record: RawRecord, now: float, cfg: ValidationConfig) -> FeatureEvent | Rejection:
    try:
        message = decode(record.value, record.headers, events_pb2.ClickEvent)
    except DecodeError as exc:
        return Rejection(DECODE, exc.reason)
    event = validate(message, now, cfg)
    if isinstance(event, Rejection):
        return event
    return check_key(record.key, event.user_id) or event


def plan_batch(records: Iterable[RawRecord], now: float, cfg: ValidationConfig) -> BatchPlan:
    """Split a polled batch into events to apply and records to dead-letter.

    Records keep their order, so one user's events (one partition) are applied
    in the order they were produced.

    This runs once per consumed record, so the common case (a protobuf record
    that passes every check) is handled inline, without the per-call and
    per-field overhead of :func:`parse_record`. The inline test only *accepts*:
    any record it does not accept goes through :func:`parse_record`, which
    applies the rules in full and names the reason, so both paths give the same
    result for every record.
    """
    plan = BatchPlan()
    append_event = plan.events.append
    offsets = plan.offsets
    last = offsets.get
    fast_types = _fast_types(cfg)
    limit = cfg.max_id_length
    latest = now + cfg.max_future_skew_s
    parse = _PARSE
    for record in records:
        headers = record.headers
        value = record.value
        event: FeatureEvent | Rejection | None = None
        if value is not None and (not headers or headers == _PROTOBUF_HEADERS):
            try:
                message = parse(value)
            except _PARSE_ERRORS:
                message = None
            if message is not None:
                known = fast_types.get(message.event_type)
                event_id = message.event_id
                user_id = message.user_id
                item_id = message.item_id
                stamp = message.event_time
                ts = stamp.seconds + stamp.nanos / 1e9
                if (
                    known is not None
                    and MIN_EVENT_TIME_S <= ts <= latest
                    and len(event_id) <= limit
                    and len(user_id) <= limit
                    and len(item_id) <= limit
                    and event_id.strip()
                    and user_id.strip()
                    and item_id.strip()
                    and record.key == user_id.encode()
                ):
                    event = FeatureEvent(event_id, user_id, item_id, known[0], known[1], ts)
        if event is None:
            event = parse_record(record, now, cfg)
        if isinstance(event, Rejection):
            plan.rejected.append((record, event))
        else:
            append_event(event)
        tp = (record.topic, record.partition)
        next_offset = record.offset + 1
        if last(tp, -1) < next_offset:
            offsets[tp] = next_offset
    return plan


# What a protobuf record's headers look like when written by recsys.kafka_codec.encode: a
# record with exactly these (or none) is parsed without reading its headers one by one.
_PROTOBUF_HEADERS = [(CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF.encode("ascii"))]
_PARSE = events_pb2.ClickEvent.FromString
_PARSE_ERRORS = (ProtoDecodeError, RuntimeError, ValueError)


def _fast_types(cfg: ValidationConfig) -> dict[int, tuple[str, float]]:
    """Event type number -> (name, weight) for the types weighed without a value.

    Ratings are left out: their weight depends on the value, which the full
    path checks.
    """
    return {
        number: (name, cfg.weights[name])
        for number, name in EVENT_TYPE_NAMES.items()
        if name != "rating"
    }
