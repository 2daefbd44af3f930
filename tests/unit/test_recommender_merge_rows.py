"""The request path's array merge of history and live weights equals the dict reference.

``merge_rows`` replaced ``combine_weights`` followed by the model's per-item filter on the
fold-in path; every mode, overlaps, unknown items, and non-positive or non-finite weights
must give the same (row, weight) set, and so the same user vector.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from tiny_recommender import tiny_model

from services.recommender.service import History, combine_weights, merge_rows


def reference(
    history: dict[str, float], live: dict[str, float], mode: str, known: dict[str, int]
) -> dict[int, float]:
    merged = combine_weights(history, live, mode)
    return {
        known[i]: float(np.float32(w))
        for i, w in merged.items()
        if i in known and w > 0 and math.isfinite(w)
    }


@pytest.mark.parametrize("mode", ["max", "sum", "none"])
def test_merge_rows_matches_combine_weights_then_filter(mode: str) -> None:
    rng = random.Random(5)
    items = [f"i{n}" for n in range(30)]
    known = {item: n for n, item in enumerate(items)}
    specials = [-1.0, 0.0, math.nan, math.inf, -math.inf]
    for _ in range(300):
        h_items = rng.sample(items, rng.randint(0, 12))
        history = {i: float(np.float32(rng.uniform(0.5, 5))) for i in h_items}
        live: dict[str, float] = {}
        for item in rng.sample([*items, "unknown-1", "unknown-2"], rng.randint(0, 14)):
            live[item] = rng.choice(specials) if rng.random() < 0.2 else rng.uniform(-1, 6)
        h_rows = np.array([known[i] for i in history], dtype=np.int64)
        h_raw = np.array(list(history.values()), dtype=np.float32)
        live_rows = np.array([known.get(i, -1) for i in live], dtype=np.int64)
        live_raw = np.array(list(live.values()), dtype=np.float64)
        rows, raw = merge_rows(History(history, h_rows, h_raw), live_rows, live_raw, mode)
        assert rows.dtype == np.int64 and raw.dtype == np.float32
        assert len(set(rows.tolist())) == rows.size  # each item once
        got = dict(zip(rows.tolist(), raw.tolist(), strict=True))
        assert got == reference(history, live, mode, known)


def test_fold_in_from_rows_equals_fold_in_from_ids() -> None:
    model = tiny_model()
    weights = {"a0": 2.0, "b1": 1.0, "nope": 3.0, "a2": -1.0}
    rows = model.lookup_rows(weights)
    raw = np.array(list(weights.values()))
    keep = (rows >= 0) & (raw > 0)
    np.testing.assert_array_equal(
        model.recalculate_rows(rows[keep], raw[keep].astype(np.float32)),
        model.recalculate_user(weights),
    )
    assert rows.tolist()[2] == -1
