"""Metrics on hand-computed cases, the splits, and the replay protocol on a toy world."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.store.keys import KeySchema
from services.recommender.evaluation.data import (
    EventLog,
    random_split,
    recency_boosted,
    temporal_user_split,
    time_split,
)
from services.recommender.evaluation.metrics import (
    batch_top_k,
    evaluate,
    list_metrics,
    ranking_metrics,
)
from services.recommender.evaluation.recommenders import PopularityRec
from services.recommender.evaluation.replay import REPLAY_VARIANTS, RealtimeConfig, replay
from services.recommender.model import ItemMeta
from services.recommender.training import (
    TrainConfig,
    matrix_from_user_weights,
    read_redis_weights,
    user_id_from_weights_key,
)


def test_package_keeps_the_names_callers_import_from_it() -> None:
    """Regression: the split into submodules keeps ``evaluation.X`` working for the CLI,
    the benchmarks and the demo, with the very objects the submodules define."""
    from services.recommender import evaluation
    from services.recommender.evaluation import data, metrics, offline, replay, results

    assert evaluation.event_log_from_movielens is data.event_log_from_movielens
    assert evaluation.time_split is data.time_split
    assert evaluation.run_offline is offline.run_offline
    assert evaluation.run_replay is replay.run_replay
    assert evaluation.ProtocolResult is results.ProtocolResult
    assert evaluation.evaluate is metrics.evaluate
    assert set(evaluation.__all__) <= set(dir(evaluation))


def test_ranking_metrics_by_hand() -> None:
    # user 0: relevant {1, 3}; list [1, 2, 3, -1...] -> hits at ranks 1 and 3
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    recs = np.array([[1, 2, 3] + [-1] * 7, [0, 1, 2] + [-1] * 7])
    m = ranking_metrics(recs, relevant, np.array([0, 1]), k=10)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["p@10"] == pytest.approx((2 / 10 + 0) / 2)
    assert m["r@10"] == pytest.approx((1.0 + 0) / 2)
    assert m["hr@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg / 2)
    assert m["map@10"] == pytest.approx((1 / 1 + 2 / 3) / 2 / 2)
    lm = list_metrics(recs, np.array([5, 4, 3, 2, 1], dtype=np.float32))
    assert lm["coverage"] == pytest.approx(4 / 5)
    assert lm["mean_pop"] == pytest.approx(np.mean([4, 3, 2, 5, 4, 3]))


def test_batch_top_k_excludes_seen_and_pads() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
    out = batch_top_k(scores, seen, 3)
    assert out[0].tolist() == [3, 2, 0]
    assert out[1].tolist() == [-1, -1, -1]


def _log(n_users: int = 6, per_user: int = 10) -> EventLog:
    users = np.repeat(np.arange(n_users), per_user)
    items = np.tile(np.arange(per_user), n_users)
    ts = np.arange(len(users))  # interleave nothing: user blocks in time order
    return EventLog(
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        ratings=np.full(len(users), 4.0, dtype=np.float32),
        timestamps=ts.astype(np.int64),
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(per_user)],
        item_meta={},
    )


def test_temporal_split_holds_out_each_users_last_fifth() -> None:
    log = _log()
    train, test = temporal_user_split(log, np.arange(len(log)), 0.2)
    assert len(test) == 6 * 2 and len(np.intersect1d(train, test)) == 0
    for u in range(6):
        mine = np.flatnonzero(log.users == u)
        assert set(test[log.users[test] == u]) == set(mine[-2:])


def test_random_and_time_splits_partition() -> None:
    idx = np.arange(100)
    tr, te = random_split(idx, 0.2, seed=1)
    assert len(te) == 20 and sorted(np.concatenate([tr, te]).tolist()) == idx.tolist()
    first, rest = time_split(idx, 0.5)
    assert first.max() < rest.min() and len(first) == 50


def test_popularity_evaluation_hits_the_popular_item() -> None:
    train_m = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float32))
    m = evaluate(PopularityRec(), train_m, test, k=1)
    # unseen most popular: user0 -> item2, user1 -> item1 (tie 1/2 broken by index), user2 -> 0
    assert m["hr@10"] == pytest.approx(1.0)


def _two_worlds() -> EventLog:
    """Two disjoint tastes; in the second half new users arrive and rate within one taste."""
    rng = np.random.default_rng(0)
    users, items, ts = [], [], []
    t = 0
    for u in range(40):
        group = u % 2
        for i in rng.permutation(10)[:8]:
            users.append(u)
            items.append(group * 10 + i)
            ts.append(t)
            t += 1
    return EventLog(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        ratings=np.full(len(users), 4.0, dtype=np.float32),
        timestamps=np.array(ts, dtype=np.int64),
        user_ids=[f"u{u}" for u in range(40)],
        item_ids=[f"i{i}" for i in range(20)],
        item_meta={f"i{i}": ItemMeta(f"i{i}", genres=("A" if i < 10 else "B",)) for i in range(20)},
    )


def test_replay_fold_in_beats_static_and_popularity_for_new_users() -> None:
    """The protocol-3 claim in miniature: users unseen in training only get personal
    recommendations through fold-in."""
    log = _two_worlds()
    train_idx, replay_idx = time_split(np.arange(len(log)), 0.5)
    res = replay(log, train_idx, replay_idx, TrainConfig(factors=4, iterations=10, num_threads=1))
    assert res["als_foldin"]["hr@10"] > res["als_static"]["hr@10"] + 0.1
    assert res["als_foldin"]["hr@10"] > res["popularity"]["hr@10"] + 0.1
    assert set(res) == set(REPLAY_VARIANTS)


def test_replay_popularity_is_static_and_trending_follows_the_replay() -> None:
    """``popularity`` only knows training counts; ``trending`` and ``popularity_live`` see
    the replayed events, so a film that only becomes popular in the replay is hit by them."""
    users: list[int] = []
    items: list[int] = []
    ts: list[int] = []
    for u in range(10):  # training: everybody rates items 0-2
        for i in range(3):
            users.append(u)
            items.append(i)
            ts.append(len(ts))
    for u in range(10, 30):  # replay: new users all rate item 5, after a warm-up item 4
        for i in (4, 5):
            users.append(u)
            items.append(i)
            ts.append(len(ts))
    log = EventLog(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        ratings=np.full(len(users), 4.0, dtype=np.float32),
        timestamps=np.array(ts, dtype=np.int64),
        user_ids=[f"u{u}" for u in range(30)],
        item_ids=[f"i{i}" for i in range(20)],
        item_meta={},
    )
    train_idx, replay_idx = np.arange(30), np.arange(30, len(users))
    res = replay(
        log,
        train_idx,
        replay_idx,
        TrainConfig(factors=4, iterations=5, num_threads=1),
        realtime=RealtimeConfig(trending_half_life_s=5.0),
        k=3,
        variants=("popularity", "popularity_live", "trending"),
    )
    assert res["popularity"]["hr@10"] == 0.0  # items 4 and 5 never enter the static top 3
    assert res["trending"]["hr@10"] >= 0.85  # misses only while items 4 and 5 are new
    # cumulative counts need ten replay users to overtake the training favourites; decay, less
    assert res["trending"]["hr@10"] > res["popularity_live"]["hr@10"] > 0.3


def test_recency_boosted_matrix_ranks_by_event_time() -> None:
    log = _two_worlds()
    m = log.matrix(np.arange(len(log)))
    boosted = recency_boosted(log, m, boost=1.0, half_life=1.0)
    row = boosted[0].toarray().ravel()
    order = [int(i) for i in log.items[log.users == 0]]  # user 0's items, oldest first
    assert row[order[-1]] == pytest.approx(4.0 * 2.0)  # newest: 1 + boost
    assert row[order[-2]] == pytest.approx(4.0 * 1.5)
    assert row[order[0]] == pytest.approx(4.0 * (1.0 + 2.0 ** -(len(order) - 1)))
    assert (
        recency_boosted(log, m, boost=0.0, half_life=1.0).toarray().tolist() == m.toarray().tolist()
    )


def test_matrix_from_user_weights_sums_and_drops_unknown_items() -> None:
    rows = [("u1", {"a": 2.0, "b": 1.0}), ("u2", {"a": 1.0, "zzz": 5.0}), ("u3", {"b": -1.0})]
    data = matrix_from_user_weights(rows, item_ids=["a", "b", "c"])
    dense = data.matrix.toarray()
    assert data.item_ids == ["a", "b", "c"]
    assert dense[data.user_ids.index("u1")].tolist() == [2.0, 1.0, 0.0]
    assert dense[data.user_ids.index("u2")].tolist() == [1.0, 0.0, 0.0]
    assert dense[data.user_ids.index("u3")].tolist() == [0.0, 0.0, 0.0]  # negative dropped


def test_weights_key_round_trip() -> None:
    schema = KeySchema("t1")
    assert user_id_from_weights_key(schema, schema.weights("user:42")) == "user:42"
    assert user_id_from_weights_key(schema, schema.seen("user:42")) is None


class _FakeRedis:
    """Just enough of redis-py for the SCAN + pipelined HGETALL logic (pure unit test)."""

    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data

    def scan_iter(self, match: str, count: int) -> list[bytes]:
        import fnmatch

        keys = [k.encode() for k in self.data if fnmatch.fnmatchcase(k, match.replace("\\", ""))]
        return keys + keys[:1]  # SCAN may repeat a key

    def pipeline(self, transaction: bool) -> _FakeRedis._Pipe:
        return _FakeRedis._Pipe(self)

    class _Pipe:
        def __init__(self, parent: _FakeRedis) -> None:
            self.parent, self.keys = parent, []  # type: ignore[var-annotated]

        def hgetall(self, key: str) -> None:
            self.keys.append(key)

        def execute(self) -> list[dict[bytes, bytes]]:
            return [
                {k.encode(): v.encode() for k, v in self.parent.data[key].items()}
                for key in self.keys
            ]


def test_read_redis_weights_scans_weights_hashes_once() -> None:
    schema = KeySchema("p")
    fake = _FakeRedis(
        {
            schema.weights("u1"): {"a": "2", "b": "1.5"},
            schema.weights("u2"): {"a": "1"},
            schema.seen("u1"): {"a": "1"},  # other per-user keys are ignored
        }
    )
    rows = dict(read_redis_weights(fake, schema, batch=1))
    assert rows == {"u1": {"a": 2.0, "b": 1.5}, "u2": {"a": 1.0}}
