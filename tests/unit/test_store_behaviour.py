"""One behaviour suite for every FeatureStore backend (in-memory and real Redis).

The Redis half is marked ``integration``: it talks to a real redis-server.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from recsys.store import FeatureEvent, FeatureStore, KeySchema, StoreConfig
from recsys.store.decay import decay_rate
from recsys.store.memory import InMemoryFeatureStore

T0 = 1_700_000_000.0
CFG = StoreConfig(recent_cap=3, trending_half_life_s=3600.0, dedup_max_user=50)


REDIS_LAYOUTS: dict[str, dict[str, Any]] = {
    # one script call per chunk of users, global keys included (standalone Redis)
    "redis": {},
    # chunks of at most two events: a batch becomes many pipelined script calls
    "redis-small-chunks": {"max_events_per_script": 2},
    # Redis Cluster layout: one call per slot group, the global part on its own
    "redis-cluster-layout": {"cluster": True},
}


BACKENDS = ["memory", *(pytest.param(n, marks=pytest.mark.integration) for n in REDIS_LAYOUTS)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[FeatureStore]:
    if request.param == "memory":
        yield InMemoryFeatureStore(CFG)
        return
    from recsys.store.redis_store import RedisFeatureStore

    client: Any = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("key_prefix")
    yield RedisFeatureStore(client, KeySchema(prefix), CFG, **REDIS_LAYOUTS[request.param])


def ev(n: int, user: str = "u1", item: str = "i1", kind: str = "click", weight: float = 2.0,
       ts: float | None = None) -> FeatureEvent:  # fmt: skip
    return FeatureEvent(f"e{n}", user, item, kind, weight, T0 + n if ts is None else ts)


def test_recent_is_newest_first_and_capped(store: FeatureStore) -> None:
    store.apply_events([ev(i, item=f"i{i}") for i in range(5)], now=T0)
    state = store.get_user_state("u1", now=T0)
    assert [r.item for r in state.recent] == ["i4", "i3", "i2"]
    assert state.recent[0].type == "click"
    assert state.recent[0].weight == 2.0
    assert state.recent[0].ts == T0 + 4
    assert state.seen == {f"i{i}" for i in range(5)}


def test_weights_accumulate_per_item(store: FeatureStore) -> None:
    store.apply_events(
        [ev(1, weight=1.0, kind="view"), ev(2, weight=8.0, kind="purchase"), ev(3, item="i2")],
        now=T0,
    )
    state = store.get_user_state("u1", now=T0)
    assert state.weights == pytest.approx({"i1": 9.0, "i2": 2.0})
    assert store.counters() == {"view": 1, "purchase": 1, "click": 1}


def test_replaying_a_batch_changes_nothing(store: FeatureStore) -> None:
    batch = [ev(i, user=f"u{i % 3}", item=f"i{i % 4}") for i in range(12)]
    first = store.apply_events(batch, now=T0)
    before = (
        [store.get_user_state(f"u{u}", now=T0) for u in range(3)],
        store.trending(10, now=T0),
        store.counters(),
    )
    again = store.apply_events(batch, now=T0 + 1)
    after = (
        [store.get_user_state(f"u{u}", now=T0) for u in range(3)],
        store.trending(10, now=T0),
        store.counters(),
    )
    assert (first.user_applied, first.global_applied) == (12, 12)
    assert (again.user_applied, again.global_applied) == (0, 0)
    assert after == before


def test_duplicate_id_inside_one_batch_counts_once(store: FeatureStore) -> None:
    result = store.apply_events([ev(1), ev(1)], now=T0)
    assert result.user_applied == 1
    assert store.get_user_state("u1", now=T0).weights == {"i1": 2.0}
    assert store.counters() == {"click": 1}


def test_partial_replay_applies_only_the_missing_events(store: FeatureStore) -> None:
    """A crash after the first half of a batch: replaying the whole batch completes it."""
    batch = [ev(i, item=f"i{i % 2}") for i in range(6)]
    store.apply_events(batch[:3], now=T0)
    store.apply_events(batch, now=T0)
    reference = InMemoryFeatureStore(CFG)
    reference.apply_events(batch, now=T0)
    assert store.get_user_state("u1", now=T0) == reference.get_user_state("u1", now=T0)
    assert store.counters() == reference.counters()


def test_trending_decays_with_half_life(store: FeatureStore) -> None:
    # "old" got weight 8 four half-lives before "new" got weight 1.
    store.apply_events(
        [ev(1, item="old", weight=8.0, ts=T0), ev(2, item="new", weight=1.0, ts=T0 + 4 * 3600)],
        now=T0,
    )
    now = T0 + 4 * 3600
    top = store.trending(5, now=now)
    scores = dict(top)
    assert scores["new"] == pytest.approx(1.0, rel=1e-9)
    assert scores["old"] == pytest.approx(8.0 / 16.0, rel=1e-9)
    assert [item for item, _ in top] == ["new", "old"]


def test_trending_sums_decayed_weights(store: FeatureStore) -> None:
    store.apply_events(
        [ev(1, item="a", weight=2.0, ts=T0), ev(2, item="a", weight=3.0, ts=T0 + 3600)], now=T0
    )
    ((item, score),) = store.trending(1, now=T0 + 7200)
    assert item == "a"
    assert score == pytest.approx(2.0 / 4 + 3.0 / 2, rel=1e-9)
    assert store.trending(0, now=T0) == []


def test_non_positive_weight_counts_but_does_not_trend(store: FeatureStore) -> None:
    store.apply_events([ev(1, item="meh", weight=-1.0, kind="rating")], now=T0)
    assert store.trending(5, now=T0) == []
    assert store.counters() == {"rating": 1}
    assert store.get_user_state("u1", now=T0).weights == {"meh": -1.0}


def test_forget_user_removes_every_key_of_that_user_only(store: FeatureStore) -> None:
    store.apply_events([ev(1, user="a"), ev(2, user="b")], now=T0)
    store.suppress("a", "x", 60, now=T0)
    store.update_sentiment("a", 0.5, T0, 3600)
    assert store.forget_user("a") >= 4
    state = store.get_user_state("a", now=T0)
    assert state == ([], set(), {}, set())
    assert store.get_sentiment("a") is None
    assert store.get_user_state("b", now=T0).seen == {"i1"}
    # forgotten events are not re-applied from the user's dedup memory either: it is gone too
    assert store.apply_events([ev(1, user="a")], now=T0).user_applied == 1


def test_suppression_expires(store: FeatureStore) -> None:
    store.suppress("u1", "bad", 60, now=T0)
    store.suppress("u1", "worse", 600, now=T0)
    assert store.get_user_state("u1", now=T0 + 30).suppressed == {"bad", "worse"}
    assert store.get_user_state("u1", now=T0 + 61).suppressed == {"worse"}
    store.suppress("u1", "worse", 10, now=T0 + 61)  # a shorter suppression never shortens
    assert store.get_user_state("u1", now=T0 + 100).suppressed == {"worse"}
    with pytest.raises(ValueError):
        store.suppress("u1", "x", 0, now=T0)


def test_sentiment_is_a_time_decayed_average(store: FeatureStore) -> None:
    first = store.update_sentiment("u1", 1.0, T0, 3600)
    assert first == (1.0, 1.0, T0)
    second = store.update_sentiment("u1", -1.0, T0 + 3600, 3600)
    assert second is not None
    # the first observation weighs 1/2 after one half-life: (0.5*1 - 1) / 1.5
    assert second.avg == pytest.approx(-1.0 / 3.0)
    assert second.n == pytest.approx(1.5)
    late = store.update_sentiment("u1", 1.0, T0, 3600)  # out of order: decayed itself
    assert late is not None
    assert late.ts == T0 + 3600
    assert late.n == pytest.approx(2.0)
    assert store.get_sentiment("u1") == pytest.approx(late)
    with pytest.raises(ValueError):
        store.update_sentiment("u1", 2.0, T0, 3600)


def test_sentiment_folds_each_feedback_id_once(store: FeatureStore) -> None:
    first = store.update_sentiment("u1", 1.0, T0, 3600, feedback_id="f1", now=T0)
    second = store.update_sentiment("u1", -1.0, T0 + 3600, 3600, feedback_id="f2", now=T0)
    assert first is not None and second is not None
    # a replay of f1 and of f2 (crash before the commit) changes nothing
    assert store.update_sentiment("u1", 1.0, T0, 3600, feedback_id="f1", now=T0) is None
    assert store.update_sentiment("u1", -1.0, T0 + 3600, 3600, feedback_id="f2", now=T0) is None
    assert store.get_sentiment("u1") == pytest.approx(second)
    # feedback ids and event ids live apart: an event with the same id still applies
    same_id = FeatureEvent("f1", "u1", "i1", "click", 2.0, T0)
    assert store.apply_events([same_id], now=T0).user_applied == 1
    # the memory is a window, trimmed when new feedback arrives: after that, f1 is new again
    later = T0 + CFG.dedup_window_s + 1
    assert store.update_sentiment("u1", 1.0, later, 3600, feedback_id="f3", now=later)
    assert store.update_sentiment("u1", 1.0, later, 3600, feedback_id="f1", now=later)
    # forget_user drops the feedback memory with the rest
    store.forget_user("u1")
    assert store.update_sentiment("u1", 1.0, T0, 3600, feedback_id="f1", now=T0) == (1.0, 1.0, T0)


def test_dedup_memory_is_bounded_per_user(store: FeatureStore) -> None:
    cap = CFG.dedup_max_user
    for i in range(cap + 10):
        store.apply_events([ev(i)], now=T0 + i)
    # the ten oldest ids fell out of the capped memory; the newest are still remembered
    assert store.apply_events([ev(cap + 9)], now=T0 + cap + 10).user_applied == 0
    assert store.apply_events([ev(0)], now=T0 + cap + 10).user_applied == 1


def test_dedup_memory_forgets_ids_older_than_the_window(store: FeatureStore) -> None:
    store.apply_events([ev(1)], now=T0)
    store.apply_events([ev(2)], now=T0 + CFG.dedup_window_s + 10)
    assert store.apply_events([ev(1)], now=T0 + CFG.dedup_window_s + 10).user_applied == 1
    assert store.apply_events([ev(2)], now=T0 + CFG.dedup_window_s + 10).user_applied == 0


@pytest.mark.parametrize("layout", ["redis", "redis-small-chunks", "redis-cluster-layout"])
def test_every_script_call_touches_one_slot_in_cluster_layout_only_there(layout: str) -> None:
    """Cluster layout: each EVALSHA's keys share one slot (Redis Cluster refuses others)."""
    from redis.crc import key_slot

    from recsys.store.redis_store import RedisFeatureStore

    store = RedisFeatureStore(None, KeySchema("p"), CFG, **REDIS_LAYOUTS[layout])
    store._sha = {"batch": "0" * 40}
    batch = [ev(i, user=f"u{i % 50}") for i in range(200)]
    calls = store._batch_commands(batch, T0).args()
    user_keys = 0
    for call in calls:
        nkeys = int(call[2])
        slots = {key_slot(k.encode()) for k in call[3 : 3 + nkeys]}
        user_keys += sum(1 for k in call[3 : 3 + nkeys] if ":{u:" in k)
        if layout == "redis-cluster-layout":
            assert len(slots) == 1, call[:6]
    assert user_keys == 4 * 50
    if layout == "redis":
        assert len(calls) == 1
    if layout == "redis-small-chunks":
        assert len(calls) == 50  # four events per user, two per chunk: one user per call


def test_one_apply_is_one_round_trip(store: FeatureStore) -> None:
    store.apply_events([ev(9999, user="warm-up")], now=T0)  # Redis loads its scripts once
    before = store.round_trips  # type: ignore[attr-defined]
    store.apply_events([ev(i, user=f"u{i}") for i in range(200)], now=T0)
    assert store.round_trips - before == 1  # type: ignore[attr-defined]


def test_begin_apply_then_result_equals_apply_events(store: FeatureStore) -> None:
    """The overlapped path (send now, read later) writes exactly what apply_events writes."""
    batch = [ev(i, user=f"u{i % 4}", item=f"i{i % 5}", weight=1.0 + i % 3) for i in range(40)]
    pending = store.begin_apply(batch, now=T0)
    result = pending.result()
    assert (result.user_applied, result.global_applied, result.events) == (40, 40, 40)
    assert pending.result() == result  # reading twice does not re-apply
    reference = InMemoryFeatureStore(CFG)
    reference.apply_events(batch, now=T0)
    for u in range(4):
        assert store.get_user_state(f"u{u}", now=T0) == reference.get_user_state(f"u{u}", now=T0)
    assert store.counters() == reference.counters()
    assert dict(store.trending(10, now=T0)) == pytest.approx(dict(reference.trending(10, now=T0)))
    assert store.begin_apply(batch, now=T0 + 1).result().user_applied == 0


def test_ids_and_items_with_json_and_resp_special_characters(store: FeatureStore) -> None:
    odd = ['quote"d', "back\\slash", "new\nline", "snow☃man", "\r\n$3\r\n", "[1,2]", "1e5"]
    batch = [ev(i, user=f"user {name}", item=name) for i, name in enumerate(odd)]
    assert store.apply_events(batch, now=T0).user_applied == len(odd)
    for name in odd:
        state = store.get_user_state(f"user {name}", now=T0)
        assert state.seen == {name}
        assert state.recent[0].item == name
        assert state.weights == {name: 2.0}
    assert store.counters() == {"click": len(odd)}
    assert store.apply_events(batch, now=T0).user_applied == 0


def test_decay_rate_rejects_non_positive_half_life() -> None:
    assert decay_rate(math.log(2.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        decay_rate(0)


def test_script_arguments_carry_each_event_once_with_the_exact_recent_entry() -> None:
    """The cached entry heads and float texts give byte for byte FeatureEvent.recent_entry."""
    import json

    from recsys.store.redis_store import RedisFeatureStore

    store = RedisFeatureStore(None, KeySchema("p"), CFG)
    store._sha = {"batch": "0" * 40}
    batch = [
        FeatureEvent("e1", "u1", "i/1", "click", 2.0, T0 + 0.1),
        FeatureEvent("e2", "u1", "i/1", "click", 2.0, T0 + 0.2),  # cached head
        FeatureEvent("e3", "u2", 'ü"x', "rating", -0.0, T0),
        FeatureEvent("e4", "u2", 'ü"x', "rating", 0.0, T0),  # equal to -0.0, other text
        FeatureEvent("e5", "u3", "i3", "view", 1, 1_700_000_000),  # ints: not cached
        FeatureEvent("e6", "u3", "i3", "view", 1.0, float("inf")),
    ]
    (call,) = store._batch_commands(batch, T0).args()
    groups = json.loads(call[-1])
    assert [len(g) for g in groups] == [12, 12, 12]  # six strings per event, grouped per user
    flat = [tuple(g[i : i + 6]) for g in groups for i in range(0, len(g), 6)]
    for ev, (event_id, item, weight, ts, kind, entry) in zip(batch, flat, strict=True):
        assert (event_id, item, kind) == (ev.event_id, ev.item_id, ev.event_type)
        assert float(weight) == ev.weight and float(ts) == ev.ts
        assert entry == ev.recent_entry()


@pytest.mark.integration
@pytest.mark.parametrize("layout", list(REDIS_LAYOUTS))
def test_user_ttl_is_refreshed_for_all_four_keys_once_a_percent_has_passed(
    layout: str, redis_client: Any, key_prefix: str
) -> None:
    from recsys.store.redis_store import RedisFeatureStore

    keys = KeySchema(key_prefix)
    cfg = StoreConfig(user_ttl_s=1000)
    store = RedisFeatureStore(redis_client, keys, cfg, **REDIS_LAYOUTS[layout])
    four = [keys.recent("u1"), keys.seen("u1"), keys.weights("u1"), keys.applied("u1")]
    store.apply_events([ev(1)], now=T0)
    assert all(990 < redis_client.ttl(k) <= 1000 for k in four)
    # less than 1% of the TTL has passed: a write leaves the TTLs as they are
    for k in four:
        redis_client.expire(k, 995)
    store.apply_events([ev(2)], now=T0 + 1)
    assert all(redis_client.ttl(k) <= 995 for k in four)
    # more than 1%: the write refreshes all four keys
    for k in four:
        redis_client.expire(k, 985)
    store.apply_events([ev(3)], now=T0 + 2)
    assert all(redis_client.ttl(k) > 995 for k in four)
    # a replayed event writes nothing, so it refreshes nothing either
    for k in four:
        redis_client.expire(k, 900)
    store.apply_events([ev(3)], now=T0 + 3)
    assert all(redis_client.ttl(k) <= 900 for k in four)
