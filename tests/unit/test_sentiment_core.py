"""The sentiment service's pure core: limits, language, scores, feedback planning, settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import ConfigError, InvalidArgumentError, UnavailableError
from recsys.feedback.v1 import feedback_pb2
from recsys.kafka_codec import CONTENT_TYPE_JSON, encode
from services.sentiment import core
from services.sentiment.config import SentimentSettings, load_settings
from services.sentiment.core import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    Prediction,
    TextRequest,
    classify,
    detect_language,
    normalize_language,
    plan_feedback,
    sentiment_score,
    should_suppress,
    should_unsuppress,
    validate_text,
)


class FixedPredictor:
    """Returns one fixed probability row per text and records what it was asked."""

    def __init__(self, row: Sequence[float] = (0.7, 0.2, 0.1), version: str = "42") -> None:
        self.row = tuple(row)
        self.calls: list[list[str]] = []
        self._version = version

    @property
    def model_version(self) -> str:
        return self._version

    def predict_proba(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        self.calls.append(list(texts))
        return [self.row for _ in texts]


@dataclass
class Record:
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None = None
    key: bytes | None = b"u1"
    topic: str = "fb"
    partition: int = 0
    offset: int = 0


def feedback(**fields: object) -> feedback_pb2.CustomerFeedback:
    base: dict[str, object] = {"feedback_id": "f1", "user_id": "u1", "text": "broken again"}
    base.update(fields)
    return feedback_pb2.CustomerFeedback(**base)  # type: ignore[arg-type]


def plan(*records: Record, max_chars: int = 50) -> core.FeedbackPlan:
    return plan_feedback(records, max_text_chars=max_chars, max_id_length=16)


# --- language ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("质量很好，非常满意", "zh"),
        ("This is fine", "en"),
        ("我买了iPhone 15 Pro，很满意", "zh"),  # brand names in Latin do not flip it
        ("the 小米 phone is great value for money", "en"),  # one quoted name does not either
        ("12345 !!! ???", "und"),
        ("", "und"),
    ],
)
def test_detect_language_uses_the_cjk_share_of_letters(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_normalize_language_keeps_the_primary_subtag_and_refuses_garbage() -> None:
    assert normalize_language("zh-Hans-CN") == "zh"
    assert normalize_language("EN_us") == "en"
    assert normalize_language("  ") is None
    assert normalize_language(None) is None
    with pytest.raises(InvalidArgumentError, match="BCP-47"):
        normalize_language("english please")


# --- input limits --------------------------------------------------------------------


def test_empty_and_blank_text_are_invalid_arguments() -> None:
    for text in ("", "   \n\t"):
        with pytest.raises(InvalidArgumentError, match="empty"):
            validate_text(text, 10)


def test_over_long_text_names_the_limit() -> None:
    with pytest.raises(InvalidArgumentError, match="the limit is 10"):
        validate_text("x" * 11, 10)
    assert validate_text("x" * 10, 10) == "x" * 10


def test_length_is_counted_in_characters_not_bytes() -> None:
    assert validate_text("好" * 10, 10)  # 30 bytes of UTF-8, 10 characters


def test_unpaired_surrogate_is_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        validate_text("bad \udc80 text", 100)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_validate_text_accepts_exactly_the_scorable_strings(text: str) -> None:
    try:
        text.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    scorable = bool(text.strip()) and len(text) <= 40 and encodable
    try:
        accepted = validate_text(text, 40) == text
    except InvalidArgumentError:
        accepted = False
    assert accepted == scorable


# --- scoring ---------------------------------------------------------------------------


def test_score_is_positive_minus_negative_probability() -> None:
    assert sentiment_score((0.7, 0.2, 0.1)) == pytest.approx(-0.6)
    assert sentiment_score((0.0, 0.0, 1.0)) == 1.0


def test_classify_validates_everything_before_calling_the_model() -> None:
    predictor = FixedPredictor()
    with pytest.raises(InvalidArgumentError, match=r"requests\[1\]\.text is empty"):
        classify(predictor, [TextRequest("ok"), TextRequest("")], max_chars=100, max_batch=10)
    assert predictor.calls == []


def test_classify_refuses_batches_over_the_limit() -> None:
    with pytest.raises(InvalidArgumentError, match="limit is 2"):
        classify(FixedPredictor(), [TextRequest("a")] * 3, max_chars=100, max_batch=2)


def test_classify_returns_label_probabilities_language_and_version() -> None:
    predictor = FixedPredictor((0.1, 0.2, 0.7), version="7")
    preds = classify(
        predictor,
        [TextRequest("very nice"), TextRequest("好", "zh-TW"), TextRequest("好")],
        max_chars=100,
        max_batch=10,
    )
    assert [p.label for p in preds] == [POSITIVE] * 3
    assert [p.language for p in preds] == ["en", "zh", "zh"]
    assert preds[0].probability_map() == {"negative": 0.1, "neutral": 0.2, "positive": 0.7}
    assert preds[0].model_version == "7"
    assert preds[0].proto_label == feedback_pb2.SENTIMENT_LABEL_POSITIVE
    assert predictor.calls == [["very nice", "好", "好"]]


def test_proto_labels_match_the_enum() -> None:
    assert core.PROTO_LABELS[NEGATIVE] == feedback_pb2.SENTIMENT_LABEL_NEGATIVE
    assert core.PROTO_LABELS[NEUTRAL] == feedback_pb2.SENTIMENT_LABEL_NEUTRAL
    assert core.PROTO_LABELS[POSITIVE] == feedback_pb2.SENTIMENT_LABEL_POSITIVE


# --- the Kafka path ----------------------------------------------------------------------


def test_valid_feedback_is_planned_with_its_language_and_offsets() -> None:
    value, headers = encode(feedback(language="en-GB"))
    p = plan(Record(value, list(headers), offset=5), Record(value, list(headers), offset=6))
    assert [i.language for i in p.items] == ["en", "en"]
    assert p.rejected == []
    assert p.offsets == {("fb", 0): 7}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (feedback(text=""), core.EMPTY_TEXT),
        (feedback(text="   "), core.EMPTY_TEXT),
        (feedback(text="x" * 51), core.TEXT_TOO_LONG),
        (feedback(feedback_id=""), core.MISSING_ID),
        (feedback(user_id=" "), core.MISSING_ID),
        (feedback(user_id="u" * 17), core.ID_TOO_LONG),
        (feedback(item_id="i" * 17), core.ID_TOO_LONG),
        (feedback(language="not a tag"), core.BAD_LANGUAGE),
    ],
)
def test_unscorable_feedback_is_dead_lettered_with_a_reason(
    message: feedback_pb2.CustomerFeedback, code: str
) -> None:
    value, headers = encode(message)
    p = plan(Record(value, list(headers), offset=3))
    assert p.items == []
    [(record, rejection)] = p.rejected
    assert record.value == value
    assert rejection.code == code
    assert rejection.reason.startswith(code + ": ")
    assert p.offsets == {("fb", 0): 4}  # committed past it: a dead letter is handled


def test_text_over_the_limit_names_the_limit_in_the_reason() -> None:
    value, headers = encode(feedback(text="x" * 51))
    [(_, rejection)] = plan(Record(value, list(headers))).rejected
    assert "the limit is 50" in rejection.reason


def test_invalid_utf8_is_dead_lettered_as_such_in_both_encodings() -> None:
    proto = feedback(text="abc").SerializeToString().replace(b"abc", b"a\xffc")
    js = b'{"feedbackId": "f", "userId": "u", "text": "a\xff"}'
    p = plan(
        Record(proto),
        Record(js, [("content-type", CONTENT_TYPE_JSON.encode())], offset=1),
    )
    assert [r.code for _, r in p.rejected] == [core.INVALID_UTF8, core.INVALID_UTF8]


def test_tombstones_and_garbage_are_decode_errors() -> None:
    p = plan(Record(None), Record(b"\x0a\xff\xff\xff\xff", offset=1))
    assert [r.code for _, r in p.rejected] == [core.DECODE, core.DECODE]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from([None, [("content-type", CONTENT_TYPE_JSON.encode())]]),
)
def test_plan_never_raises_on_any_bytes(
    value: bytes, headers: list[tuple[str, bytes | None]] | None
) -> None:
    p = plan(Record(value, headers))
    assert len(p.items) + len(p.rejected) == 1


def pred(label: int, probs: tuple[float, float, float]) -> Prediction:
    return Prediction(label, probs, "en", "1")


def test_only_negative_feedback_naming_an_item_suppresses_it() -> None:
    neg = pred(NEGATIVE, (0.8, 0.1, 0.1))
    assert should_suppress(feedback(item_id="sku-1"), neg, 0.5)
    assert not should_suppress(feedback(), neg, 0.5)  # no item named
    assert not should_suppress(feedback(item_id=" "), neg, 0.5)
    assert not should_suppress(feedback(item_id="sku-1"), pred(POSITIVE, (0.1, 0.1, 0.8)), 0.5)
    assert not should_suppress(feedback(item_id="sku-1"), neg, 0.9)  # not sure enough


def test_only_positive_feedback_naming_an_item_lifts_its_suppression() -> None:
    pos = pred(POSITIVE, (0.1, 0.1, 0.8))
    assert should_unsuppress(feedback(item_id="sku-1"), pos, 0.5)
    assert not should_unsuppress(feedback(), pos, 0.5)  # no item named
    assert not should_unsuppress(feedback(item_id=" "), pos, 0.5)
    assert not should_unsuppress(feedback(item_id="sku-1"), pred(NEUTRAL, (0.2, 0.6, 0.2)), 0.5)
    assert not should_unsuppress(feedback(item_id="sku-1"), pred(NEGATIVE, (0.8, 0.1, 0.1)), 0.5)
    assert not should_unsuppress(feedback(item_id="sku-1"), pos, 0.9)  # not sure enough


def test_praise_after_a_complaint_lifts_the_suppression_in_record_order() -> None:
    """Regression: a suppression could only be waited out (30 days). Positive feedback about
    the item lifts it; the handler applies a batch in record order, so a complaint followed
    by praise ends lifted and praise followed by a complaint ends suppressed."""
    from recsys.store.memory import InMemoryFeatureStore
    from services.sentiment.consumer import SentimentHandler

    store = InMemoryFeatureStore()
    handler = SentimentHandler(SentimentSettings(), None, store, FixedPredictor(), lambda: 1e9)
    neg, pos = pred(NEGATIVE, (0.8, 0.1, 0.1)), pred(POSITIVE, (0.1, 0.1, 0.8))

    def item(fid: str, user: str) -> core.FeedbackItem:
        return core.FeedbackItem(Record(None), feedback(feedback_id=fid, user_id=user,
                                                        item_id="sku-1"), "en")  # fmt: skip

    batch = [item("f1", "u1"), item("f2", "u1"), item("f3", "u2"), item("f4", "u2")]
    handler._write_features(batch, [neg, pos, pos, neg], now=1e9)
    assert store.get_serving_state("u1", now=1e9).suppressed == set()
    assert store.get_serving_state("u2", now=1e9).suppressed == {"sku-1"}
    assert (handler.suppressed, handler.unsuppressed) == (2, 1)
    handler._write_features(batch, [neg, pos, pos, neg], now=1e9)  # a replay: same end state
    assert store.get_serving_state("u1", now=1e9).suppressed == set()
    assert store.get_serving_state("u2", now=1e9).suppressed == {"sku-1"}


def test_feedback_time_falls_back_to_now_when_absent_or_in_the_future() -> None:
    msg = feedback()
    assert core.feedback_time(msg, 1000.0) == 1000.0
    msg.feedback_time.seconds = 900
    assert core.feedback_time(msg, 1000.0) == 900.0
    msg.feedback_time.seconds = 5000
    assert core.feedback_time(msg, 1000.0) == 1000.0


# --- settings --------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = load_settings({})
    assert s.backend == "inprocess"
    assert s.max_text_chars == 5000
    assert s.model_dir.is_absolute()
    assert isinstance(s, SentimentSettings)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"SENTIMENT_BACKEND": "onnx"}, "SENTIMENT_BACKEND"),
        ({"TFSERVING_ADDRESS": "tfserving"}, "TFSERVING_ADDRESS"),
        ({"SENTIMENT_MAX_TEXT_CHARS": "0"}, "SENTIMENT_MAX_TEXT_CHARS"),
        ({"SENTIMENT_OUTPUT_TOPIC": "recsys.feedback.v1"}, "must all differ"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ],
)
def test_bad_settings_fail_with_the_variable_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(env)


def test_swappable_predictor_is_unavailable_until_a_model_is_set() -> None:
    from services.sentiment.server import SwappablePredictor

    swap = SwappablePredictor()
    with pytest.raises(UnavailableError):
        swap.predict_proba(["x"])
    swap.set(FixedPredictor(version="3"))
    assert swap.model_version == "3"
    assert len(swap.predict_proba(["x", "y"])) == 2
