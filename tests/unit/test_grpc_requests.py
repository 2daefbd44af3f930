"""Parsing request bodies without raising, and the throttled log of the ones that fail.

The servers' behaviour on the wire (INVALID_ARGUMENT, counted, one warning) is in
tests/integration/test_malformed_requests.py; this pins the two pieces it is made of.
"""

from __future__ import annotations

import logging

import pytest
from google.protobuf.message import Message

from recsys.grpc_requests import LogThrottle, MalformedRequest, tolerant_parser
from recsys.recommender.v1 import recommender_pb2 as pb
from recsys.sentiment.v1 import sentiment_pb2


def with_invalid_utf8(message: bytes) -> bytes:
    """``message`` (serialised with a string field "PLACEHOLDER") with that string's last
    byte replaced by one that is never valid UTF-8, the length unchanged."""
    assert message.count(b"PLACEHOLDER") == 1
    return message.replace(b"PLACEHOLDER", b"PLACEHOLDE\xff")


def test_a_valid_body_parses_to_its_message() -> None:
    parse = tolerant_parser(pb.RecommendRequest)
    request = pb.RecommendRequest(user_id="u1", k=3)
    assert parse(request.SerializeToString()) == request
    assert parse(b"") == pb.RecommendRequest()  # every field at its default: valid


BATCH_WITH_BAD_WIDGET_ID = pb.BatchRecommendRequest(
    widgets=[pb.WidgetRequest(widget_id="PLACEHOLDER")]
).SerializeToString()


@pytest.mark.parametrize(
    ("message_class", "body", "reason"),
    [
        (pb.RecommendRequest,
         with_invalid_utf8(pb.RecommendRequest(user_id="PLACEHOLDER").SerializeToString()),
         "UTF-8"),
        (pb.BatchRecommendRequest, with_invalid_utf8(BATCH_WITH_BAD_WIDGET_ID), "UTF-8"),
        (pb.RecommendRequest, b"\xff\xff\xff", "corrupt"),
        (pb.ExplainRequest, b"\x0a\x10ab", "corrupt"),  # a length past the end of the body
    ],
)  # fmt: skip
def test_a_body_that_does_not_parse_becomes_a_malformed_request_naming_type_and_reason(
    message_class: type[Message], body: bytes, reason: str
) -> None:
    """Regression: the generated deserializer raised inside grpc (UNKNOWN / INTERNAL)."""
    result = tolerant_parser(message_class)(body)
    assert isinstance(result, MalformedRequest)
    assert result.type_name == message_class.DESCRIPTOR.full_name
    assert reason in result.reason
    assert result.message.startswith(f"request body is not a valid {result.type_name}: ")
    assert "Error parsing message" not in result.message  # protobuf's prefix said it twice


def test_the_message_names_the_request_type_of_the_method() -> None:
    body = with_invalid_utf8(sentiment_pb2.ClassifyRequest(text="PLACEHOLDER").SerializeToString())
    result = tolerant_parser(sentiment_pb2.ClassifyRequest)(body)
    assert isinstance(result, MalformedRequest)
    assert result.type_name == "recsys.sentiment.v1.ClassifyRequest"
    assert result.message == (
        "request body is not a valid recsys.sentiment.v1.ClassifyRequest: "
        "String field had bad UTF-8"
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_throttle_logs_once_per_interval_per_key_with_the_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of bad requests costs one warning per method per interval, not one per call."""
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        logged = [throttle.warning("Recommend", "bad body") for _ in range(50)]
        assert throttle.warning("Explain", "bad body")  # another key has its own interval
        clock.now += 9.9
        assert not throttle.warning("Recommend", "bad body")
        clock.now += 0.1
        assert throttle.warning("Recommend", "bad body", {"method": "Recommend"})
    assert logged == [True] + [False] * 49
    records = caplog.records
    assert [r.levelno for r in records] == [logging.WARNING] * 3
    assert [getattr(r, "suppressed", None) for r in records] == [0, 0, 50]
    assert getattr(records[2], "method", None) == "Recommend"
