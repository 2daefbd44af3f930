"""The Kafka wire contract: protobuf and JSON of the same schema, told apart by content-type."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from recsys.events.v1 import events_pb2
from recsys.feedback.v1 import feedback_pb2
from recsys.kafka_codec import (
    CONTENT_TYPE_HEADER,
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    DecodeError,
    decode,
    encode,
)


def _event() -> events_pb2.ClickEvent:
    return events_pb2.ClickEvent(
        event_id="e-1",
        user_id="u-1",
        item_id="i-9",
        event_type=events_pb2.EVENT_TYPE_RATING,
        value=4.0,
        event_time=Timestamp(seconds=1_700_000_000),
        session_id="s-1",
        context={"page": "home"},
    )


@pytest.mark.parametrize("content_type", [CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON])
def test_round_trip_keeps_every_field(content_type: str) -> None:
    value, headers = encode(_event(), content_type)
    assert dict(headers)[CONTENT_TYPE_HEADER] == content_type.encode()
    decoded = decode(value, headers, events_pb2.ClickEvent)
    assert decoded == _event()
    assert decoded.HasField("value")


def test_json_encoding_is_the_canonical_proto3_mapping() -> None:
    value, _ = encode(_event(), CONTENT_TYPE_JSON)
    text = value.decode()
    assert '"eventType": "EVENT_TYPE_RATING"' in text
    assert '"eventTime": "2023-11-14T22:13:20Z"' in text


def test_unknown_enum_name_in_json_decodes_as_unspecified() -> None:
    """Validation downstream rejects UNSPECIFIED types, so no event is silently mistyped."""
    raw = b'{"eventId": "e", "eventType": "EVENT_TYPE_TELEPORT"}'
    msg = decode(raw, [(CONTENT_TYPE_HEADER, b"application/json")], events_pb2.ClickEvent)
    assert msg.event_type == events_pb2.EVENT_TYPE_UNSPECIFIED


def test_missing_header_means_protobuf() -> None:
    value, _ = encode(_event(), CONTENT_TYPE_PROTOBUF)
    assert decode(value, None, events_pb2.ClickEvent) == _event()


def test_json_with_unknown_fields_is_accepted_for_forward_compatibility() -> None:
    raw = b'{"eventId": "e", "userId": "u", "itemId": "i", "futureField": 1}'
    msg = decode(raw, [(CONTENT_TYPE_HEADER, b"application/json")], events_pb2.ClickEvent)
    assert msg.event_id == "e"


@pytest.mark.parametrize(
    ("value", "content_type", "reason"),
    [
        (None, CONTENT_TYPE_PROTOBUF, "tombstone"),
        (b"\xff\xfe\x00", CONTENT_TYPE_JSON, "invalid UTF-8"),
        (b"{not json", CONTENT_TYPE_JSON, "invalid JSON"),
        (b'{"eventId": 7}', CONTENT_TYPE_JSON, "invalid JSON"),
        (b"\x0a\xff\xff\xff", CONTENT_TYPE_PROTOBUF, "invalid protobuf"),
        (b"{}", "text/csv", "unsupported content-type"),
    ],
)
def test_bad_records_raise_decode_error_with_reason(
    value: bytes | None, content_type: str, reason: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(value, [(CONTENT_TYPE_HEADER, content_type.encode())], events_pb2.ClickEvent)
    assert reason in info.value.reason


@given(st.binary(max_size=256), st.sampled_from([CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON]))
def test_any_bytes_decode_or_raise_decode_error_only(raw: bytes, content_type: str) -> None:
    headers = [(CONTENT_TYPE_HEADER, content_type.encode())]
    for cls in (events_pb2.ClickEvent, feedback_pb2.CustomerFeedback):
        try:
            decode(raw, headers, cls)
        except DecodeError as exc:
            assert exc.reason


def test_kafka_python_checks_record_crcs_with_the_c_extension() -> None:
    # the pure-Python CRC-32C is two thirds of kafka-python's per-record consume cost
    # (docs/benchmarks.md); the crc32c extra must be installed wherever the services run
    from kafka.record import util

    assert util._crc32c is not util.crc32c_py
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the standard check value
