"""Click events and Kafka records built by hand, for the events tests (unit and integration).

``Rec`` stands in for kafka-python's ``ConsumerRecord`` (the fields the events service
reads, mutable so a test can damage one); ``bad_payloads`` draws a payload the service
must dead-letter. Test modules share these through this module, never through each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import CONTENT_TYPE_JSON, encode

#: the tests' clock: every ``click`` happened ten seconds before it
NOW = 1_750_000_000.0


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None


def click(**fields: object) -> events_pb2.ClickEvent:
    base: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": events_pb2.EVENT_TYPE_CLICK,
    }
    base.update(fields)
    ev = events_pb2.ClickEvent(**base)  # type: ignore[arg-type]
    if "event_time" not in fields:
        ev.event_time.FromSeconds(int(NOW) - 10)
    return ev


def rec(message: events_pb2.ClickEvent | bytes, offset: int = 0, partition: int = 0,
        json: bool = False) -> Rec:  # fmt: skip
    """A record as producers send it: keyed by the event's user id (``b"u1"`` for bytes)."""
    if isinstance(message, bytes):
        return Rec("t", partition, offset, b"u1", message, None)
    value, headers = encode(message, CONTENT_TYPE_JSON) if json else encode(message)
    return Rec("t", partition, offset, message.user_id.encode(), value, list(headers))


# A bad payload: corrupt bytes, or a well-formed message with exactly one defect.
_defects = st.sampled_from(
    ["empty_event", "empty_user", "empty_item", "long_id", "old", "future", "unknown", "no_time"]
)


@st.composite
def bad_payloads(draw: st.DrawFn, now: float = NOW) -> bytes:
    if draw(st.booleans()):
        junk = draw(st.binary(min_size=1, max_size=64))
        try:
            events_pb2.ClickEvent.FromString(junk)
        except Exception:
            return junk
        # junk that happens to parse is still invalid: every id is empty or missing fields
        msg = events_pb2.ClickEvent.FromString(junk)
        if not (msg.event_id and msg.user_id and msg.item_id):
            return junk
        return b"\xff"  # a lone field tag without data never parses
    defect = draw(_defects)
    msg = click(event_id=draw(st.text(min_size=1, max_size=20).filter(str.strip)))
    if defect == "empty_event":
        msg.event_id = ""
    elif defect == "empty_user":
        msg.user_id = ""
    elif defect == "empty_item":
        msg.item_id = ""
    elif defect == "long_id":
        msg.user_id = "u" * draw(st.integers(129, 400))
    elif defect == "old":
        msg.event_time.FromSeconds(draw(st.integers(0, 946_684_799)))
    elif defect == "future":
        msg.event_time.FromSeconds(draw(st.integers(int(now) + 3600, int(now) + 10**9)))
    elif defect == "unknown":
        msg.event_type = draw(st.sampled_from([0, 6, 99, 12345]))  # type: ignore[assignment]
    else:
        msg.ClearField("event_time")
    return msg.SerializeToString()
