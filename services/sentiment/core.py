"""The sentiment service's pure core: labels, input limits, language, scores.

No TensorFlow, gRPC, Kafka clients or Redis here, so every rule the transports share
(what counts as too long, which language a text is in, how a prediction turns
into the score that the per-user average folds in, which feedback hides or shows an item
again) is unit-tested without any of them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recsys.errors import InvalidArgumentError
from recsys.feedback.v1 import feedback_pb2
from recsys.kafka_codec import DecodeError, RawRecord, Rejection, decode

NEGATIVE, NEUTRAL, POSITIVE = 0, 1, 2
#: Model output order: probabilities[i] belongs to LABELS[i].
LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
#: SentimentLabel enum numbers (recsys.feedback.v1) per model class index.
PROTO_LABELS: tuple[int, int, int] = (1, 2, 3)

LANG_ZH, LANG_EN, LANG_UNDETERMINED = "zh", "en", "und"
#: Share of CJK characters among the letters of a text from which it counts as Chinese.
CJK_RATIO = 0.3

#: Rows of (negative, neutral, positive) probabilities, one per text.
Probabilities = np.ndarray | Sequence[Sequence[float]]

_BCP47 = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Prediction:
    """One classified text: class index, per-class probabilities, language, model version."""

    label: int
    probabilities: tuple[float, float, float]
    language: str
    model_version: str

    @property
    def label_name(self) -> str:
        return LABELS[self.label]

    @property
    def proto_label(self) -> int:
        return PROTO_LABELS[self.label]

    @property
    def score(self) -> float:
        return sentiment_score(self.probabilities)

    def probability_map(self) -> dict[str, float]:
        return dict(zip(LABELS, self.probabilities, strict=True))


def sentiment_score(probabilities: Sequence[float]) -> float:
    """Expected sentiment in [-1, 1]: P(positive) - P(negative).

    The per-user average (which the recommender's Explain reports) folds in this rather
    than the arg-max label, so a hesitant "negative" (0.4 / 0.35 / 0.25) moves a user's
    average less than a sure one.
    """
    score = float(probabilities[POSITIVE]) - float(probabilities[NEGATIVE])
    return max(-1.0, min(1.0, score))


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF  # Extension A
        or 0x20000 <= cp <= 0x2FA1F  # Extensions B-F and compatibility supplement
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
        or 0x3000 <= cp <= 0x303F  # CJK punctuation
        or 0xFF00 <= cp <= 0xFFEF  # full-width forms
    )


def detect_language(text: str) -> str:
    """``zh`` when CJK characters are at least CJK_RATIO of the letters, ``en`` when
    there are Latin letters, else ``und``.

    A ratio rather than "any CJK character" because English feedback quotes
    product names in Chinese and Chinese reviews mention brands in Latin letters;
    the model itself is character-level and does not need the tag.
    """
    cjk = latin = 0
    for ch in text:
        if is_cjk(ch):
            if unicodedata.category(ch).startswith("L"):
                cjk += 1
        elif ch.isalpha() and ord(ch) < 0x250:
            latin += 1
    letters = cjk + latin
    if letters == 0:
        return LANG_UNDETERMINED
    if cjk / letters >= CJK_RATIO:
        return LANG_ZH
    return LANG_EN if latin else LANG_UNDETERMINED


def normalize_language(tag: str | None) -> str | None:
    """A caller's BCP-47 tag reduced to its lower-case primary subtag (``zh-Hans-CN`` -> ``zh``).

    ``None``/empty means "detect it". Anything that is not shaped like a tag is
    refused rather than echoed back into responses and Kafka records.
    """
    if tag is None:
        return None
    tag = tag.strip()
    if not tag:
        return None
    if not _BCP47.match(tag):
        raise InvalidArgumentError(
            f"language {tag[:40]!r} is not a BCP-47 tag (e.g. 'en', 'zh-CN')"
        )
    return tag.replace("_", "-").split("-")[0].lower()


def validate_text(text: str, max_chars: int, *, field: str = "text") -> str:
    """Refuse what the model cannot score: empty/blank, over-long, or not encodable.

    Length is counted in Unicode code points, the unit the model's character
    vocabulary uses, so the limit means the same for Chinese and English.
    """
    if not text or not text.strip():
        raise InvalidArgumentError(f"{field} is empty; send the feedback text to classify")
    if len(text) > max_chars:
        raise InvalidArgumentError(
            f"{field} has {len(text)} characters; the limit is {max_chars} "
            "(SENTIMENT_MAX_TEXT_CHARS)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{field} is not valid Unicode (unpaired surrogate at {exc.start})"
        ) from None
    return text


def resolve_language(text: str, given: str | None) -> str:
    normalized = normalize_language(given)
    return normalized if normalized is not None else detect_language(text)


def predictions_from_probabilities(
    probabilities: Probabilities, languages: Sequence[str], model_version: str
) -> list[Prediction]:
    """Turn model output rows into Predictions (arg-max label, ties to the lower index)."""
    out: list[Prediction] = []
    for row, language in zip(probabilities, languages, strict=True):
        p = (float(row[0]), float(row[1]), float(row[2]))
        label = max(range(3), key=lambda i: (p[i], -i))
        out.append(Prediction(label, p, language, model_version))
    return out


class Predictor(Protocol):
    """What the core needs from a model backend (see services.sentiment.backends)."""

    @property
    def model_version(self) -> str: ...

    def predict_proba(self, texts: Sequence[str]) -> Probabilities: ...


@dataclass(frozen=True)
class TextRequest:
    text: str
    language: str | None = None  # BCP-47 tag from the caller, None to detect


def classify(
    predictor: Predictor,
    requests: Sequence[TextRequest],
    *,
    max_chars: int,
    max_batch: int,
) -> list[Prediction]:
    """Validate every request first (one bad text fails the whole call, naming its
    index, so a caller never gets a batch back with silent holes), then score them
    in one model call."""
    if len(requests) > max_batch:
        raise InvalidArgumentError(
            f"batch has {len(requests)} texts; the limit is {max_batch} (SENTIMENT_MAX_BATCH)"
        )
    if not requests:
        return []
    single = len(requests) == 1
    languages: list[str] = []
    for i, req in enumerate(requests):
        field = "text" if single else f"requests[{i}].text"
        validate_text(req.text, max_chars, field=field)
        languages.append(resolve_language(req.text, req.language))
    probabilities = predictor.predict_proba([r.text for r in requests])
    return predictions_from_probabilities(probabilities, languages, predictor.model_version)


# --- the Kafka path's pure part --------------------------------------------------------

# Dead-letter reason codes (the metric label); the header carries "code: detail".
DECODE = "decode"
INVALID_UTF8 = "invalid_utf8"
MISSING_ID = "missing_id"
ID_TOO_LONG = "id_too_long"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
BAD_LANGUAGE = "bad_language"
REASON_CODES = (
    DECODE, INVALID_UTF8, MISSING_ID, ID_TOO_LONG, EMPTY_TEXT, TEXT_TOO_LONG, BAD_LANGUAGE
)  # fmt: skip


@dataclass(slots=True)
class FeedbackItem:
    record: RawRecord
    feedback: feedback_pb2.CustomerFeedback
    language: str  # given (normalised) or detected


@dataclass(slots=True)
class FeedbackPlan:
    items: list[FeedbackItem] = field(default_factory=list)
    rejected: list[tuple[RawRecord, Rejection]] = field(default_factory=list)
    # (topic, partition) -> next offset to consume, i.e. the offset to commit.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


def check_feedback(
    message: feedback_pb2.CustomerFeedback, *, max_text_chars: int, max_id_length: int
) -> str | Rejection:
    """The language to classify ``message`` in, or why it can never be scored."""
    for name, value in (("feedback_id", message.feedback_id), ("user_id", message.user_id)):
        if not value.strip():
            return Rejection(MISSING_ID, f"{name} is empty")
        if len(value) > max_id_length:
            return Rejection(
                ID_TOO_LONG, f"{name} has {len(value)} characters (max {max_id_length})"
            )
    if message.HasField("item_id") and len(message.item_id) > max_id_length:
        return Rejection(ID_TOO_LONG, f"item_id has {len(message.item_id)} characters")
    try:
        validate_text(message.text, max_text_chars)
    except InvalidArgumentError as exc:
        code = EMPTY_TEXT if not message.text.strip() else TEXT_TOO_LONG
        if "surrogate" in str(exc):
            code = INVALID_UTF8
        return Rejection(code, str(exc))
    try:
        return resolve_language(
            message.text, message.language if message.HasField("language") else None
        )
    except InvalidArgumentError as exc:
        return Rejection(BAD_LANGUAGE, str(exc))


def plan_feedback(
    records: Iterable[RawRecord], *, max_text_chars: int, max_id_length: int
) -> FeedbackPlan:
    """Decode and validate a polled batch; never raises on record contents."""
    plan = FeedbackPlan()
    for record in records:
        tp = (record.topic, record.partition)
        plan.offsets[tp] = max(plan.offsets.get(tp, 0), record.offset + 1)
        try:
            message = decode(record.value, record.headers, feedback_pb2.CustomerFeedback)
        except DecodeError as exc:
            code = INVALID_UTF8 if "utf-8" in exc.reason.lower() else DECODE
            plan.rejected.append((record, Rejection(code, exc.reason)))
            continue
        checked = check_feedback(
            message, max_text_chars=max_text_chars, max_id_length=max_id_length
        )
        if isinstance(checked, Rejection):
            plan.rejected.append((record, checked))
        else:
            plan.items.append(FeedbackItem(record, message, checked))
    return plan


def should_suppress(
    feedback: feedback_pb2.CustomerFeedback, prediction: Prediction, min_probability: float
) -> bool:
    """Negative feedback that names an item hides that item from the user."""
    return (
        feedback.HasField("item_id")
        and bool(feedback.item_id.strip())
        and prediction.label == NEGATIVE
        and prediction.probabilities[NEGATIVE] >= min_probability
    )


def should_unsuppress(
    feedback: feedback_pb2.CustomerFeedback, prediction: Prediction, min_probability: float
) -> bool:
    """Positive feedback that names an item lifts the user's suppression of it.

    The mirror of :func:`should_suppress` (same threshold, on P(positive)): a customer who
    complained about an item and later praises it would otherwise not see it again until
    the suppression runs out (``SENTIMENT_SUPPRESS_TTL_S``, 30 days by default).
    """
    return (
        feedback.HasField("item_id")
        and bool(feedback.item_id.strip())
        and prediction.label == POSITIVE
        and prediction.probabilities[POSITIVE] >= min_probability
    )


def feedback_time(feedback: feedback_pb2.CustomerFeedback, now: float) -> float:
    """Event time for the decayed average: the CRM's timestamp, or ``now`` when absent
    or in the future (a skewed clock must not pin a user's average)."""
    if feedback.HasField("feedback_time"):
        ts = feedback.feedback_time.seconds + feedback.feedback_time.nanos / 1e9
        if 0 < ts <= now:
            return ts
    return now
