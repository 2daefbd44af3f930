"""The issue-13 holdout protocol on a tiny hand-made log whose split and scores are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.recommender.evaluation import holdout

# (user, item, time) in file order. Comments give the split the protocol must make.
ROWS = [
    # a: 7 interactions → ⌈5.6⌉ = 6 train, p7 test (in c's training data: a target).
    *[("a", f"p{j}", j) for j in range(1, 8)],
    # b: 6 interactions all at time 10 → ⌈4.8⌉ = 5 train; the tie goes by file order, so the
    # last row (p7) is the test row.
    *[("b", item, 10) for item in ("q1", "q2", "q3", "q4", "q5", "p7")],
    # c: written out of time order; by time: p7, p1..p5 train, p6 test (a target).
    ("c", "p6", 7),
    *[("c", item, t) for t, item in enumerate(("p7", "p1", "p2", "p3", "p4", "p5"), start=1)],
    # d: 5 interactions → ⌈4.0⌉ = 4 train: fewer than 5 training interactions, not evaluated.
    *[("d", f"p{j}", j) for j in range(1, 6)],
    # e: 10 → 8 train; test p1 (trained on) and zz (in nobody's training): no target.
    *[("e", item, t) for t, item in enumerate(("p1", "q1", "q2", "q3", "q4", "q5", "p2", "p3"))],
    ("e", "p1", 20),
    ("e", "zz", 21),
]


def _log() -> holdout.Log:
    users, items, times = zip(*ROWS, strict=True)
    return holdout.Log.from_columns(users, items, times)


def _rows_of(log_: holdout.Log, idx: np.ndarray, user: str) -> list[str]:
    u = log_.user_ids.index(user)
    return [log_.item_ids[log_.items[r]] for r in idx if log_.users[r] == u]


def test_holdout_splits_each_user_at_ceil_80_percent_in_time_then_file_order() -> None:
    log_ = _log()
    train, test = holdout.train_test_rows(log_, np.arange(len(log_)), "holdout")
    assert _rows_of(log_, test, "a") == ["p7"]
    assert _rows_of(log_, test, "b") == ["p7"]  # the tie broken by file order
    assert _rows_of(log_, test, "c") == ["p6"]
    assert _rows_of(log_, train, "c") == ["p7", "p1", "p2", "p3", "p4", "p5"]
    assert _rows_of(log_, test, "d") == ["p5"]  # ⌈0.8·5⌉ = 4, not 5
    assert _rows_of(log_, test, "e") == ["p1", "zz"]
    assert len(train) + len(test) == len(log_)


def test_holdout_targets_are_unseen_training_items_of_users_with_five_training_rows() -> None:
    log_ = _log()
    s = holdout.split(log_, "holdout")
    evaluated = sorted(log_.user_ids[u] for u in s.users)
    assert evaluated == ["a", "b", "c"]  # d: 4 training rows; e: no target
    a = log_.user_ids.index("a")
    targets = [s.item_ids[c] for c in s.targets[a].indices]
    assert targets == ["p7"]
    e = log_.user_ids.index("e")
    assert s.targets[e].nnz == 0
    assert "zz" not in s.item_ids  # only training items form the item axis


class _Fixed:
    """Scores every item by a fixed order: the first item of ``ranking`` highest."""

    def __init__(self, item_ids: list[str], ranking: list[str]) -> None:
        self.vec = np.zeros(len(item_ids), dtype=np.float32)
        for r, item in enumerate(ranking):
            self.vec[item_ids.index(item)] = len(ranking) - r

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self.vec, (len(users), 1))


def test_holdout_metrics_exclude_training_items_and_rank_targets() -> None:
    log_ = _log()
    s = holdout.split(log_, "holdout")
    # Order: a's six training items first (excluded for a), then q1, then p7, then p6.
    ranking = ["p1", "p2", "p3", "p4", "p5", "p6", "q1", "p7"]
    m = holdout.evaluate_split(s, _Fixed(s.item_ids, ranking))
    # a: p1..p6 seen → q1, p7: target at rank 2. b: q1..q5 seen → p1.. p6 (ranks 1-6), p7 at 7.
    # c: p7, p1..p5 seen → p6 at rank 1.
    want = (1 / math.log2(3) + 1 / math.log2(8) + 1.0) / 3
    assert m["ndcg@10"] == pytest.approx(want)
    assert m["hr@10"] == pytest.approx(1.0)
    assert m["recall@10"] == pytest.approx(1.0)


def test_timecut_trains_on_the_first_80_percent_of_the_whole_log() -> None:
    log_ = holdout.Log.from_columns(
        ["u"] * 10, [f"i{j}" for j in range(10)], [9 - j for j in range(10)]
    )
    train, test = holdout.train_test_rows(log_, np.arange(10), "timecut")
    # Times run backwards in the file: the earliest 8 are the last 8 rows.
    assert sorted(train.tolist()) == list(range(2, 10))
    assert sorted(test.tolist()) == [0, 1]


def test_validation_split_is_cut_from_the_training_part_only() -> None:
    log_ = _log()
    outer = holdout.split(log_, "holdout")
    val = holdout.validation_split(log_, outer, "holdout")
    assert set(val.train_idx.tolist()) < set(outer.train_idx.tolist())
    outer_test = set(range(len(log_))) - set(outer.train_idx.tolist())
    # No outer test row appears anywhere in the validation split's matrices.
    assert not outer_test & set(val.train_idx.tolist())
