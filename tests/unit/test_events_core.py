"""Pure logic of the events service: validation, weights, batch planning, settings, replay."""

from __future__ import annotations

import pytest
from event_records import NOW, Rec, bad_payloads, click, rec
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.consume import backoff_delays
from recsys.errors import ConfigError
from recsys.events.v1 import events_pb2
from recsys.kafka_codec import Rejection
from recsys.store import FeatureEvent
from services.events import core
from services.events.config import ValidationConfig, load_settings
from services.events.replay import Rating, fast_events, to_event

CFG = ValidationConfig()


def test_valid_click_gets_configured_weight_and_time() -> None:
    result = core.validate(click(), NOW, CFG)
    assert result == FeatureEvent("e1", "u1", "i1", "click", 2.0, NOW - 10)


def test_event_type_weights_are_ordered_view_click_cart_purchase() -> None:
    kinds = [
        events_pb2.EVENT_TYPE_VIEW,
        events_pb2.EVENT_TYPE_CLICK,
        events_pb2.EVENT_TYPE_ADD_TO_CART,
        events_pb2.EVENT_TYPE_PURCHASE,
    ]
    weights = []
    for kind in kinds:
        result = core.validate(click(event_type=kind), NOW, CFG)
        assert isinstance(result, FeatureEvent)
        weights.append(result.weight)
    assert weights == sorted(weights) and len(set(weights)) == 4


def test_rating_maps_to_weight_with_scale_and_offset() -> None:
    cfg = ValidationConfig(rating_scale=2.0, rating_offset=3.0)
    result = core.validate(click(event_type=events_pb2.EVENT_TYPE_RATING, value=5.0), NOW, cfg)
    assert isinstance(result, FeatureEvent)
    assert (result.event_type, result.weight) == ("rating", 4.0)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (click(event_id=""), core.MISSING_ID),
        (click(user_id="  "), core.MISSING_ID),
        (click(item_id=""), core.MISSING_ID),
        (click(item_id="x" * 129), core.ID_TOO_LONG),
        (click(event_type=events_pb2.EVENT_TYPE_UNSPECIFIED), core.UNKNOWN_TYPE),
        (click(event_type=42), core.UNKNOWN_TYPE),
        (click(event_type=events_pb2.EVENT_TYPE_RATING), core.BAD_VALUE),
        (click(event_type=events_pb2.EVENT_TYPE_RATING, value=9.0), core.BAD_VALUE),
        (click(event_type=events_pb2.EVENT_TYPE_RATING, value=float("nan")), core.BAD_VALUE),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(
    message: events_pb2.ClickEvent, code: str
) -> None:
    result = core.validate(message, NOW, CFG)
    assert isinstance(result, Rejection)
    assert result.code == code
    assert result.reason.startswith(code + ": ")


def test_timestamps_before_2000_far_future_or_missing_are_rejected() -> None:
    old = click()
    old.event_time.FromSeconds(946_684_799)
    future = click()
    future.event_time.FromSeconds(int(NOW + CFG.max_future_skew_s + 5))
    missing = click()
    missing.ClearField("event_time")
    near_future = click()
    near_future.event_time.FromSeconds(int(NOW + 60))
    for message in (old, future, missing):
        result = core.validate(message, NOW, CFG)
        assert isinstance(result, Rejection) and result.code == core.BAD_TIMESTAMP
    assert isinstance(core.validate(near_future, NOW, CFG), FeatureEvent)


def test_plan_batch_splits_good_and_bad_and_commits_past_both() -> None:
    records = [
        rec(click(event_id="a"), offset=5),
        rec(b"\xff\xfe not protobuf", offset=6),
        rec(click(event_id="b"), offset=7, json=True),
        rec(click(event_id="c", item_id=""), offset=3, partition=1),
        Rec("t", 1, 4, b"u1", None, None),  # tombstone
    ]
    plan = core.plan_batch(records, NOW, CFG)
    assert [e.event_id for e in plan.events] == ["a", "b"]
    assert [(r.offset, why.code) for r, why in plan.rejected] == [
        (6, core.DECODE),
        (3, core.MISSING_ID),
        (4, core.DECODE),
    ]
    assert plan.offsets == {("t", 0): 8, ("t", 1): 5}


def test_click_keyed_by_another_id_or_by_none_is_dead_lettered_as_key_mismatch() -> None:
    """Regression: a click whose record key was not its user id was applied, though per-user
    order relies on the key (one user, one partition). Such records, keyless ones included
    (the producer's partitioner then picks any partition), are dead-lettered; a record with
    a defect in its contents is still dead-lettered for that defect."""
    good = rec(click(user_id="u7"))
    assert good.key == b"u7"
    wrong = rec(click(user_id="u7"), offset=1)
    wrong.key = b"u8"
    keyless = rec(click(user_id="u7"), offset=2, json=True)
    keyless.key = None
    unicode = rec(click(user_id="użytkownik"), offset=3)
    also_bad = rec(click(user_id="u7", item_id=""), offset=4)
    also_bad.key = b"u8"
    plan = core.plan_batch([good, wrong, keyless, unicode, also_bad], NOW, CFG)
    assert [e.user_id for e in plan.events] == ["u7", "użytkownik"]
    codes = [(r.offset, why.code) for r, why in plan.rejected]
    assert codes == [(1, core.KEY_MISMATCH), (2, core.KEY_MISMATCH), (4, core.MISSING_ID)]
    assert "b'u8'" in plan.rejected[0][1].detail and "'u7'" in plan.rejected[0][1].detail
    assert "no key" in plan.rejected[1][1].detail
    assert core.KEY_MISMATCH in core.REASON_CODES


def test_unknown_content_type_is_a_decode_rejection() -> None:
    record = Rec("t", 0, 0, b"u", b"{}", [("content-type", b"text/csv")])
    result = core.parse_record(record, NOW, CFG)
    assert isinstance(result, Rejection) and result.code == core.DECODE


@settings(max_examples=300, deadline=None)
@given(bad_payloads())
def test_every_generated_bad_payload_is_rejected(payload: bytes) -> None:
    result = core.parse_record(rec(payload), NOW, CFG)
    assert isinstance(result, Rejection)
    assert result.code in core.REASON_CODES


def test_settings_from_env_validate_and_fail_fast() -> None:
    s = load_settings({"EVENTS_TOPIC": "c", "TRENDING_HALF_LIFE_S": "60", "RECENT_CAP": "7"})
    assert (s.consumer.topic, s.store.trending_half_life_s, s.store.recent_cap) == ("c", 60.0, 7)
    for env in (
        {"EVENTS_TOPIC": "x", "EVENTS_DLQ_TOPIC": "x"},
        {"REDIS_URL": "http://x"},
        {"KAFKA_BOOTSTRAP_SERVERS": "nohost"},
        {"RATING_MIN": "5", "RATING_MAX": "1"},
        {"EVENTS_MAX_POLL_RECORDS": "0"},
    ):
        with pytest.raises(ConfigError):
            load_settings(env)
    assert (
        load_settings({"KAFKA_MAX_POLL_INTERVAL_MS": "3000"}).consumer.consumer_overrides()[
            "max_poll_interval_ms"
        ]
        == 3000
    )


def test_backoff_doubles_up_to_the_cap() -> None:
    gen = iter(backoff_delays(0.1, 0.5))
    assert [next(gen) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_replay_mapping_keeps_order_spacing_and_stable_ids() -> None:
    ratings = [Rating("1", "10", 5.0, 880_000_000), Rating("2", "11", 2.0, 880_000_100)]
    events = list(fast_events(ratings, anchor=NOW))
    assert [e.event_id for e in events] == ["ml100k-1-10-880000000", "ml100k-2-11-880000100"]
    assert events[-1].event_time.seconds == int(NOW)
    assert events[0].event_time.seconds == int(NOW) - 100
    assert events[0].event_type == events_pb2.EVENT_TYPE_RATING and events[0].value == 5.0
    implicit = [to_event(Rating("1", "i", float(s), 0), NOW, "implicit").event_type
                for s in (1, 2, 3, 4, 5)]  # fmt: skip
    assert implicit == [
        events_pb2.EVENT_TYPE_VIEW,
        events_pb2.EVENT_TYPE_VIEW,
        events_pb2.EVENT_TYPE_CLICK,
        events_pb2.EVENT_TYPE_ADD_TO_CART,
        events_pb2.EVENT_TYPE_PURCHASE,
    ]
    for e in events:  # every replayed event passes validation
        assert isinstance(core.validate(e, NOW, CFG), FeatureEvent)


_IDS = st.sampled_from(["", "  ", "\t", " x ", "a" * 128, "a" * 129, "é" * 128, "é" * 129])
_STAMPS = st.sampled_from([None, 0.0, 946_684_799.0, 946_684_800.0, NOW + 300, NOW + 300.5])


@st.composite
def click_records(draw: st.DrawFn) -> Rec:
    """A valid click with up to three things pushed to a validation boundary (or past it)."""
    ev = click()
    stamp: float | None = NOW - 10
    nanos = 0
    headers = "standard"
    keys: list[bytes | None] = []  # empty: the record key is the event's user id
    for change in draw(st.lists(st.integers(0, 8), max_size=3)):
        if change <= 2:
            setattr(ev, ("event_id", "user_id", "item_id")[change], draw(_IDS))
        elif change == 3:
            ev.event_type = draw(st.sampled_from([0, 2, 3, 4, 5, 99]))  # type: ignore[assignment]
        elif change == 4:
            ev.value = draw(st.sampled_from([0.0, 0.5, 5.0, 5.5, float("nan")]))
        elif change == 5:
            stamp = draw(_STAMPS)
        elif change == 6:
            nanos = draw(st.sampled_from([1, 999_999_999]))
        elif change == 7:
            headers = draw(st.sampled_from(["none", "json", "upper", "extra", "garbage"]))
        else:
            keys.append(draw(st.sampled_from([None, b"", b"u2", b"U1", b"u1 ", "é".encode()])))
    ev.ClearField("event_time")
    if stamp is not None:
        ev.event_time.FromNanoseconds(int(stamp * 1e9))
    if nanos:
        ev.event_time.nanos = nanos
    record = rec(ev, json=headers == "json")
    if keys:
        record.key = keys[-1]
    if headers == "none":
        record.headers = None
    elif headers == "upper":
        record.headers = [("Content-Type", b"application/x-protobuf")]
    elif headers == "extra":
        record.headers = [*(record.headers or []), ("trace", b"1")]
    elif headers == "garbage":
        record.value = b"\xff\xff" + (record.value or b"")
    return record


@settings(max_examples=400, deadline=None)
@given(st.lists(click_records(), min_size=1, max_size=8))
def test_plan_batch_fast_path_decides_exactly_as_parse_record(records: list[Rec]) -> None:
    """plan_batch accepts common records inline; every verdict and reason must be
    what the full parse_record path gives for the same record."""
    for offset, record in enumerate(records):
        record.offset = offset
    plan = core.plan_batch(records, NOW, CFG)
    expected = [core.parse_record(r, NOW, CFG) for r in records]
    assert plan.events == [e for e in expected if isinstance(e, FeatureEvent)]
    assert [rej for _, rej in plan.rejected] == [
        e for e in expected if not isinstance(e, FeatureEvent)
    ]
    assert plan.offsets == {("t", 0): len(records)}
