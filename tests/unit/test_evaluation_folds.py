"""K-fold cross-validation of the random protocol: the parts, the per-fold training and
search data, the mean/std aggregation and the CLI's --folds rules (tiny synthetic data)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys_tools.cli import main
from services.recommender.evaluation import offline
from services.recommender.evaluation.data import (
    EventLog,
    kfold_parts,
    offline_splits,
    random_split,
)
from services.recommender.evaluation.metrics import METRIC_KEYS
from services.recommender.evaluation.offline import run_offline
from services.recommender.evaluation.recommenders import PopularityRec
from services.recommender.evaluation.results import ProtocolResult, combine_folds


def _toy_log(n_users: int = 30, n_items: int = 12, per_user: int = 7) -> EventLog:
    """Each user rates ``per_user`` distinct items once: every (user, item) pair is one event."""
    rng = np.random.default_rng(3)
    users, items = [], []
    for u in range(n_users):
        for i in rng.permutation(n_items)[:per_user]:
            users.append(u)
            items.append(int(i))
    n = len(users)
    return EventLog(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        ratings=rng.integers(1, 6, n).astype(np.float32),
        timestamps=np.arange(n, dtype=np.int64),
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        item_meta={},
    )


def _pairs(log_: EventLog, m: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def _event_pairs(log_: EventLog, idx: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(log_.users[idx].tolist(), log_.items[idx].tolist(), strict=True))


def test_kfold_parts_are_disjoint_and_cover_every_event_once() -> None:
    idx = np.arange(103)
    parts = kfold_parts(idx, 5, seed=7)
    assert len(parts) == 5
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == idx.tolist()  # each event in exactly one part
    assert {len(p) for p in parts} <= {20, 21}
    assert all((np.diff(p) > 0).all() for p in parts)  # sorted, so time order is kept
    assert not np.array_equal(kfold_parts(idx, 5, seed=8)[0], parts[0])  # the seed matters


def test_kfold_first_part_is_the_single_split_test_set() -> None:
    """Same seed, same permutation: fold 1 of 5 is the 80/20 split the single run uses."""
    idx = np.arange(100)
    _, single_test = random_split(idx, 0.2, seed=42)
    assert np.array_equal(kfold_parts(idx, 5, seed=42)[0], single_test)


def test_offline_splits_train_excludes_its_test_part_and_tests_partition() -> None:
    log_ = _toy_log()
    splits = offline_splits("random", log_, seed=1, folds=4)
    everything = np.arange(len(log_))
    assert len(splits) == 4
    for train_idx, test_idx in splits:
        assert not np.intersect1d(train_idx, test_idx).size
        assert np.array_equal(np.union1d(train_idx, test_idx), everything)
    tests = np.concatenate([te for _, te in splits])
    assert sorted(tests.tolist()) == everything.tolist()


def test_one_fold_is_todays_single_split() -> None:
    log_ = _toy_log()
    ((train_idx, test_idx),) = offline_splits("random", log_, seed=42, folds=1)
    expected_train, expected_test = random_split(np.arange(len(log_)), 0.2, 42)
    assert np.array_equal(train_idx, expected_train) and np.array_equal(test_idx, expected_test)


def test_more_than_one_fold_is_rejected_for_other_protocols() -> None:
    log_ = _toy_log()
    with pytest.raises(ConfigError, match="random"):
        run_offline("temporal", log_, folds=2, models=("popularity",))
    with pytest.raises(ConfigError):
        run_offline("random", log_, folds=0, models=("popularity",))


def test_cli_folds_defaults_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    # Rejected before any data set is loaded: exit 2 with the reason.
    assert main(["evaluate", "--protocol", "temporal", "--folds", "2"]) == 2
    assert "--protocol random" in capsys.readouterr().err
    assert main(["evaluate", "--protocol", "replay", "--folds", "5"]) == 2
    with pytest.raises(SystemExit):
        main(["evaluate", "--folds", "0"])
    from recsys_tools.commands.recommender import _folds_for

    class Args:
        def __init__(self, protocol: str, folds: int | None) -> None:
            self.protocol, self.folds = protocol, folds

    assert _folds_for(Args("random", None)) == 5  # type: ignore[arg-type]
    assert _folds_for(Args("random", 1)) == 1  # type: ignore[arg-type]
    assert _folds_for(Args("temporal", None)) == 1  # type: ignore[arg-type]
    assert _folds_for(Args("replay", 1)) == 1  # type: ignore[arg-type]


def _result(models: dict[str, dict[str, float]], chosen: dict[str, Any]) -> ProtocolResult:
    return ProtocolResult("random", models, [], {"n_test": 10, "chosen": chosen})


def test_combine_folds_mean_and_sample_std_by_hand() -> None:
    folds = [
        _result({"als": {"p@10": 0.30, "ndcg@10": 0.40}}, {"als": {"alpha": 1.0}}),
        _result({"als": {"p@10": 0.34, "ndcg@10": 0.44}}, {"als": {"alpha": 5.0}}),
        _result({"als": {"p@10": 0.38, "ndcg@10": 0.42}}, {"als": {"alpha": 5.0}}),
    ]
    combined = combine_folds(folds)
    assert combined.models["als"]["p@10"] == pytest.approx(0.34)
    assert combined.models["als"]["ndcg@10"] == pytest.approx(0.42)
    assert combined.std["als"]["p@10"] == pytest.approx(0.04)  # sqrt((.04² + 0 + .04²) / 2)
    assert combined.std["als"]["ndcg@10"] == pytest.approx(0.02)
    summary = combined.summary()
    assert summary["folds"] == 3 and summary["models"]["als"]["p@10"] == pytest.approx(0.34)
    assert [f["models"]["als"]["p@10"] for f in summary["per_fold"]] == [0.30, 0.34, 0.38]
    assert [f["chosen"]["als"]["alpha"] for f in summary["per_fold"]] == [1.0, 5.0, 5.0]
    assert combined.details["n_test"] == [10, 10, 10]


class _Recorder(PopularityRec):
    """Popularity that remembers every matrix it is fitted on (for the data-flow checks)."""

    def __init__(self, fits: list[sp.csr_matrix], weight: float = 1.0) -> None:
        super().__init__()
        self.fits = fits
        self.weight = weight

    def fit(self, train_m: sp.csr_matrix) -> None:
        self.fits.append(train_m.copy())
        super().fit(train_m)


def test_each_fold_searches_on_its_training_part_and_refits_without_its_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log_ = _toy_log()
    two = [{"weight": 1.0}, {"weight": 2.0}]  # two candidates: the search runs
    fits: list[sp.csr_matrix] = []
    monkeypatch.setattr(
        offline,
        "model_factories",
        lambda *_a, **_k: {"rec": (lambda p: _Recorder(fits, **p), two)},
    )
    folds = 3
    result = run_offline("random", log_, folds=folds, seed=5, models=("rec",))
    splits = offline_splits("random", log_, seed=5, folds=folds)
    assert len(fits) == folds * 3  # per fold: 2 validation fits + 1 refit
    for f, (train_idx, test_idx) in enumerate(splits):
        search_a, search_b, refit = fits[3 * f : 3 * f + 3]
        test_pairs = _event_pairs(log_, test_idx)
        assert _pairs(log_, refit) == _event_pairs(log_, train_idx)  # the fold's whole train
        for m in (search_a, search_b):  # the search never sees the fold's test ratings
            assert not _pairs(log_, m) & test_pairs
            assert _pairs(log_, m) < _event_pairs(log_, train_idx)
    assert result.folds == folds and len(result.fold_results) == folds
    assert sum(result.details["n_test"]) == len(log_)
    summary = result.summary()
    assert set(summary["models"]["rec"]) == set(METRIC_KEYS)  # the JSON line keeps its shape
    expected = np.mean([r.models["rec"]["p@10"] for r in result.fold_results])
    assert result.models["rec"]["p@10"] == pytest.approx(expected)
    assert len(summary["per_fold"]) == folds and "chosen" in summary["per_fold"][0]
