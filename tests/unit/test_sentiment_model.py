"""Model-side helpers that need no training: weights, version dirs, splits, metrics, tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ConfigError
from services.sentiment.backends import resolve_version_dir
from services.sentiment.evaluation import (
    CARD_BEGIN,
    CARD_END,
    headline,
    score,
    split_corpus,
    update_card,
)
from services.sentiment.model import METADATA_FILE, balanced_weights


def test_balanced_weights_equalise_classes_within_each_language() -> None:
    labels = np.array([0, 0, 0, 2, 0, 1, 2, 2])
    groups = ["zh", "zh", "zh", "zh", "en", "en", "en", "en"]
    w = balanced_weights(labels, groups)
    zh, en = np.arange(4), np.arange(4, 8)
    assert w[zh][labels[zh] == 0].sum() == pytest.approx(w[zh][labels[zh] == 2].sum())
    for c in (0, 1, 2):
        assert w[en][labels[en] == c].sum() == pytest.approx(4 / 3)
    assert w[zh].sum() == pytest.approx(4) and w[en].sum() == pytest.approx(4)


def make_version(base: Path, name: str, *, complete: bool = True) -> Path:
    d = base / name
    d.mkdir(parents=True)
    if complete:
        (d / "saved_model.pb").write_bytes(b"")
    return d


def test_resolve_version_dir_takes_the_newest_complete_integer_version(tmp_path: Path) -> None:
    make_version(tmp_path, "3")
    make_version(tmp_path, "12")
    make_version(tmp_path, "40", complete=False)  # being written / broken
    make_version(tmp_path, ".41.tmp-1")
    make_version(tmp_path, "latest")
    assert resolve_version_dir(tmp_path) == (tmp_path / "12", 12)
    assert resolve_version_dir(tmp_path, 3) == (tmp_path / "3", 3)


def test_resolve_version_dir_accepts_a_version_dir_itself(tmp_path: Path) -> None:
    d = make_version(tmp_path, "7")
    assert resolve_version_dir(d) == (d, 7)
    (d / METADATA_FILE).write_text(json.dumps({"version": 9}))
    assert resolve_version_dir(d) == (d, 9)


def test_missing_model_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recsys sentiment train"):
        resolve_version_dir(tmp_path / "nothing-here")
    make_version(tmp_path, "1")
    with pytest.raises(ConfigError, match="SENTIMENT_MODEL_VERSION=2 not found"):
        resolve_version_dir(tmp_path, 2)


def test_splits_are_fixed_by_seed_disjoint_and_stratified() -> None:
    texts = [f"t{i}" for i in range(200)]
    labels = np.array([0] * 120 + [2] * 80, dtype=np.int8)
    a = split_corpus(texts, labels, "zh", seed=13)
    b = split_corpus(texts, labels, "zh", seed=13)
    assert a.test_texts == b.test_texts and a.val_texts == b.val_texts
    parts = [set(a.train_texts), set(a.val_texts), set(a.test_texts)]
    assert sum(map(len, parts)) == 200 and len(set.union(*parts)) == 200
    assert a.sizes() == {"train": 160, "val": 20, "test": 20}
    assert (a.test_labels == 0).sum() == 12  # the class ratio is kept
    assert split_corpus(texts, labels, "zh", seed=14).test_texts != a.test_texts


def test_a_neutral_prediction_on_a_chinese_review_is_an_error() -> None:
    y_true = np.array([0, 0, 2, 2])
    y_pred = np.array([0, 1, 2, 2])
    r = score(y_true, y_pred, "zh")
    assert r["accuracy"] == 0.75
    assert set(r["f1_per_class"]) == {"negative", "positive"}  # macro over zh's classes
    assert r["confusion"][0] == [1, 1, 0]
    assert len(r["confusion"]) == 3


def test_headline_is_the_issue_shape() -> None:
    metrics = {"accuracy": 0.9, "macro_f1": 0.8, "confusion": []}
    report = {"languages": {"zh": {"model": metrics, "tfidf_lr": metrics, "tfidf_nb": metrics}}}
    assert headline(report) == {
        "zh": {s: {"accuracy": 0.9, "macro_f1": 0.8} for s in ("model", "tfidf_lr", "tfidf_nb")}
    }


def test_update_card_replaces_only_the_generated_block(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text(f"# Card\n\nhand-written\n\n{CARD_BEGIN}\nold\n{CARD_END}\n\n## After\n")
    r = {"accuracy": 0.5, "macro_f1": 0.5, "f1_per_class": {"negative": 0.5}, "confusion":
         [[1, 0, 0], [0, 0, 0], [0, 0, 1]]}  # fmt: skip
    report = {"split_seed": 13, "splits": {"zh": {"train": 8, "val": 1, "test": 1}},
              "languages": {"zh": {"model": r}}}  # fmt: skip
    update_card(card, report)
    update_card(card, report)
    text = card.read_text()
    assert text.startswith("# Card\n\nhand-written\n") and text.endswith("## After\n")
    assert "old" not in text and text.count(CARD_BEGIN) == 1
    assert "| zh | 8 | 1 | 1 |" in text


@pytest.mark.sentiment
def test_tensor_protos_round_trip_in_both_float_encodings() -> None:
    tf = pytest.importorskip("tensorflow")
    from services.sentiment.backends import float_matrix, string_tensor_proto

    proto = string_tensor_proto([b"a", "好".encode()])
    assert tf.make_ndarray(proto).tolist() == [b"a", "好".encode()]
    probs = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], dtype=np.float32)
    packed = tf.make_tensor_proto(probs)  # tensor_content
    assert packed.tensor_content
    np.testing.assert_array_equal(float_matrix(packed), probs)
    listed = tf.make_tensor_proto(probs)
    listed.ClearField("tensor_content")
    listed.float_val.extend(probs.ravel().tolist())  # float_val, as some servers send
    np.testing.assert_array_equal(float_matrix(listed), probs)
