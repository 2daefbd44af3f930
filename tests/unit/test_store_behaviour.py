"""One behaviour suite for every FeatureStore backend (in-memory and real Redis).

The Redis half is marked ``integration``: it talks to a real redis-server. Cases
that only Redis can have (outages, restarts, SCAN patterns) follow the shared ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from recsys.errors import ConfigError, UnavailableError
from recsys.store import (
    ApplyResult,
    FeatureEvent,
    FeatureStore,
    KeySchema,
    StoreConfig,
    StoreUnavailableError,
    UserState,
)
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
    assert state == UserState([], set(), {}, set(), forgotten=True)
    assert store.get_sentiment("a") is None
    assert store.get_user_state("b", now=T0).seen == {"i1"}
    assert not store.get_user_state("b", now=T0).forgotten
    # forgotten events are not re-applied from the user's dedup memory either: it is gone too
    assert store.apply_events([ev(1, user="a")], now=T0).user_applied == 1


def test_forget_user_records_the_user_as_forgotten_for_serving_and_training(
    store: FeatureStore,
) -> None:
    """Regression: forgetting deleted the keys only, so nothing told the recommender (which
    still had the user's trained vector) or the next training (whose data set still had the
    user) to leave the user out. The record outlives the keys and later events."""
    store.apply_events([ev(1, user="a"), ev(2, user="b")], now=T0)
    assert store.forgotten_users() == {}
    store.forget_user("a", now=T0 + 5)
    assert store.forgotten_users() == {"a": T0 + 5}
    before = store.round_trips  # type: ignore[attr-defined]
    serving = store.get_serving_state("a", now=T0)
    assert store.round_trips - before == 1  # type: ignore[attr-defined]
    assert serving == UserState([], set(), {}, set(), forgotten=True)
    assert not store.get_serving_state("b", now=T0).forgotten
    # a late event of the user (still in Kafka) is stored, and the user stays forgotten
    store.apply_events([ev(3, user="a")], now=T0 + 6)
    late = store.get_serving_state("a", now=T0 + 6)
    assert late.forgotten and late.weights == {"i1": 2.0}
    # a second request moves the time; the record is still one per user
    store.forget_user("a", now=T0 + 9)
    store.forget_user("user ☃ {x}", now=T0 + 9)
    assert store.forgotten_users() == {"a": T0 + 9, "user ☃ {x}": T0 + 9}
    assert store.get_serving_state("a", now=T0 + 9).weights == {}


def test_forget_user_takes_the_users_event_ids_out_of_the_global_dedup_memory(
    store: FeatureStore,
) -> None:
    """Regression: a forgotten user's event ids (which may embed the user id) stayed in the
    global dedup ZSET for the whole window; now only other users' ids remain there."""
    mine = [ev(n, user="a", item=f"i{n}") for n in range(3)]
    theirs = [ev(n, user="b") for n in range(10, 13)]
    store.apply_events([*mine, *theirs], now=T0)
    store.forget_user("a", now=T0)
    # the global part no longer knows a's ids (a replay would count them again) ...
    assert store.apply_events(mine, now=T0).global_applied == len(mine)
    # ... and still knows b's
    assert store.apply_events(theirs, now=T0).global_applied == 0


def test_suppression_expires(store: FeatureStore) -> None:
    store.suppress("u1", "bad", 60, now=T0)
    store.suppress("u1", "worse", 600, now=T0)
    assert store.get_user_state("u1", now=T0 + 30).suppressed == {"bad", "worse"}
    assert store.get_user_state("u1", now=T0 + 61).suppressed == {"worse"}
    store.suppress("u1", "worse", 10, now=T0 + 61)  # a shorter suppression never shortens
    assert store.get_user_state("u1", now=T0 + 100).suppressed == {"worse"}
    with pytest.raises(ValueError):
        store.suppress("u1", "x", 0, now=T0)


def test_unsuppress_lifts_a_suppression_in_force_and_only_that_one(store: FeatureStore) -> None:
    """Regression: a suppression could only be waited out; positive feedback and support
    staff now lift it, and lifting it again (a replayed record) changes nothing."""
    store.suppress("u1", "bad", 600, now=T0)
    store.suppress("u1", "worse", 600, now=T0)
    store.suppress("u1", "old", 10, now=T0)
    store.suppress("u2", "bad", 600, now=T0)
    assert store.unsuppress("u1", "bad", now=T0 + 1) is True
    assert store.get_serving_state("u1", now=T0 + 1).suppressed == {"worse", "old"}
    assert store.get_serving_state("u2", now=T0 + 1).suppressed == {"bad"}
    assert store.unsuppress("u1", "bad", now=T0 + 1) is False  # lifted already
    assert store.unsuppress("u1", "old", now=T0 + 20) is False  # had run out
    assert store.unsuppress("nobody", "bad", now=T0) is False
    assert store.get_serving_state("u1", now=T0 + 20).suppressed == {"worse"}
    store.suppress("u1", "bad", 600, now=T0 + 30)  # a new complaint hides it again
    assert store.get_serving_state("u1", now=T0 + 30).suppressed == {"worse", "bad"}


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
    from recsys.store.redis_store import RedisFeatureStore, resp_command

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
    calls = store._batch_commands(batch, T0)
    (call,) = calls.args()
    nkeys = int(call[2])
    assert call[3 + nkeys + 9] == "1"  # standalone: user and global part in one call
    groups, rest = [], call[3 + nkeys + 10 :]
    while rest:  # per user: its event count (negative: maintenance due), six strings each
        n = abs(int(rest[0]))
        groups.append(rest[1 : 1 + 6 * n])
        rest = rest[1 + 6 * n :]
    assert [len(g) for g in groups] == [12, 12, 12]  # six strings per event, grouped per user
    flat = [tuple(g[i : i + 6]) for g in groups for i in range(0, len(g), 6)]
    # the RESP the standalone path sends is these arguments, byte for byte: with a
    # non-ASCII character (lengths in bytes) and without (the one-f-string-per-event path)
    packed, count = calls.packed()
    assert count == 1
    assert packed == resp_command(*call).encode("utf-8")
    ascii_calls = store._batch_commands([e for e in batch if e.item_id.isascii()], T0)
    (ascii_call,) = ascii_calls.args()
    assert ascii_calls.packed() == (resp_command(*ascii_call).encode("ascii"), 1)
    for ev, (event_id, item, weight, ts, kind, entry) in zip(batch, flat, strict=True):
        assert (event_id, item, kind) == (ev.event_id, ev.item_id, ev.event_type)
        assert float(weight) == ev.weight and float(ts) == ev.ts
        assert entry == ev.recent_entry()


@pytest.mark.integration
@pytest.mark.parametrize("layout", list(REDIS_LAYOUTS))
def test_user_ttl_is_refreshed_for_all_four_keys_once_a_percent_has_passed(
    layout: str, redis_client: Any, key_prefix: str
) -> None:
    """The TTL refresh is amortised: a write refreshes the four keys once 1% of the TTL
    has passed since this process last refreshed them (the server's remaining TTL is not
    read any more); a replay writes nothing and so refreshes nothing."""
    from recsys.store.redis_store import RedisFeatureStore

    keys = KeySchema(key_prefix)
    cfg = StoreConfig(user_ttl_s=1000)
    store = RedisFeatureStore(redis_client, keys, cfg, **REDIS_LAYOUTS[layout])
    four = [keys.recent("u1"), keys.seen("u1"), keys.weights("u1"), keys.applied("u1")]
    store.apply_events([ev(1)], now=T0)
    assert all(990 < redis_client.ttl(k) <= 1000 for k in four)
    # less than 1% of the TTL has passed (5 s, which the TTLs show): no refresh
    for k in four:
        redis_client.expire(k, 995)
    store.apply_events([ev(2)], now=T0 + 5)
    assert all(redis_client.ttl(k) <= 995 for k in four)
    # more than 1% (15 s): the write refreshes all four keys
    for k in four:
        redis_client.expire(k, 985)
    store.apply_events([ev(3)], now=T0 + 15)
    assert all(redis_client.ttl(k) > 995 for k in four)
    # a replayed event writes nothing, so it refreshes nothing either, even when due
    for k in four:
        redis_client.expire(k, 900)
    store.apply_events([ev(3)], now=T0 + 200)
    assert all(redis_client.ttl(k) <= 900 for k in four)
    # ... and the refresh stays due: the next write that applies something does it
    store.apply_events([ev(4)], now=T0 + 201)
    assert all(redis_client.ttl(k) > 995 for k in four)


@pytest.mark.integration
@pytest.mark.parametrize("layout", list(REDIS_LAYOUTS))
def test_keys_created_again_get_their_ttl_whatever_the_process_remembers(
    layout: str, redis_client: Any, key_prefix: str
) -> None:
    """Regression guard for the amortised refresh: keys deleted behind the process's back
    (forget_user, another process, an operator) and written again must not live forever."""
    from recsys.store.redis_store import RedisFeatureStore

    keys = KeySchema(key_prefix)
    store = RedisFeatureStore(
        redis_client, keys, StoreConfig(user_ttl_s=1000), **REDIS_LAYOUTS[layout]
    )
    four = [keys.recent("u1"), keys.seen("u1"), keys.weights("u1"), keys.applied("u1")]
    store.apply_events([ev(1)], now=T0)
    redis_client.delete(*four)
    store.apply_events([ev(2)], now=T0 + 1)  # refreshed 1 s ago, as far as the store knows
    assert all(990 < redis_client.ttl(k) <= 1000 for k in four)
    store.forget_user("u1", now=T0 + 2)
    store.apply_events([ev(3)], now=T0 + 3)
    assert all(990 < redis_client.ttl(k) <= 1000 for k in four)
    # a second process (its own memory of refreshes) refreshes on its first write
    other = RedisFeatureStore(
        redis_client, keys, StoreConfig(user_ttl_s=1000), **REDIS_LAYOUTS[layout]
    )
    for k in four:
        redis_client.expire(k, 995)
    other.apply_events([ev(4)], now=T0 + 4)
    assert all(redis_client.ttl(k) > 995 for k in four)


@pytest.mark.integration
@pytest.mark.parametrize("layout", list(REDIS_LAYOUTS))
def test_dedup_memory_stays_within_a_tenth_over_its_cap(
    layout: str, redis_client: Any, key_prefix: str
) -> None:
    """Pruning is amortised (every DEDUP_MAX_USER / 10 events of a user, or once 1% of the
    TTL has passed): the per-user memory never holds more than 1.1 times its cap."""
    from recsys.store.redis_store import RedisFeatureStore

    keys = KeySchema(key_prefix)
    cfg = StoreConfig(dedup_max_user=50)
    store = RedisFeatureStore(redis_client, keys, cfg, **REDIS_LAYOUTS[layout])
    sizes = []
    for i in range(0, 300, 3):
        store.apply_events([ev(i + j) for j in range(3)], now=T0)
        sizes.append(redis_client.zcard(keys.applied("u1")))
    assert max(sizes) <= 55
    assert max(sizes) > 50  # pruned in steps, not on every write


@pytest.mark.integration
@pytest.mark.parametrize("layout", list(REDIS_LAYOUTS))
def test_standalone_layout_keeps_one_dedup_memory_and_cluster_layout_two(
    layout: str, redis_client: Any, key_prefix: str
) -> None:
    """Standalone: the user part and the global part of an event run in one atomic call, so
    the user's dedup memory serves both and `{g}:applied` is never written. A cluster's
    global part is a call of its own and keeps its own memory."""
    from recsys.store.redis_store import RedisFeatureStore

    keys = KeySchema(key_prefix)
    store = RedisFeatureStore(redis_client, keys, CFG, **REDIS_LAYOUTS[layout])
    batch = [ev(i, user=f"u{i % 3}", item=f"i{i % 4}") for i in range(12)]
    assert store.apply_events(batch, now=T0) == ApplyResult(12, 12, 12)
    counters, trending = store.counters(), store.trending_log_scores()
    replay = store.apply_events(batch, now=T0 + 1)
    assert (replay.user_applied, replay.global_applied) == (0, 0)
    assert store.counters() == counters and store.trending_log_scores() == trending
    assert bool(redis_client.exists(keys.global_applied())) == (layout == "redis-cluster-layout")


# --------------------------------------------------------------------------- serving read
def test_serving_state_is_the_user_state_without_recent_in_one_round_trip(
    store: FeatureStore,
) -> None:
    """The recommender's read (every Recommend request) sees what get_user_state sees."""
    users = ["u1", "usér-ünïcode", 'quote"d \r\n$3\r\n', "nobody"]
    events = [
        FeatureEvent(f"e{n}", user, item, "click", 1.5 + n, T0)
        for n, (user, item) in enumerate(
            [("u1", "a"), ("u1", "b"), (users[1], "ïtem-ß"), (users[1], "a"), (users[2], "[1]")]
        )
    ]
    store.apply_events(events, now=T0)
    store.suppress("u1", "b", 60, now=T0)
    store.suppress("u1", "gone", 1, now=T0 - 10)  # expired: not returned
    store.forget_user(users[2], now=T0)
    store.apply_events([FeatureEvent("late", users[2], "x", "click", 1.0, T0)], now=T0)
    assert store.get_serving_state(users[2], now=T0).forgotten
    for user in users:
        full = store.get_user_state(user, now=T0)
        before = store.round_trips  # type: ignore[attr-defined]
        serving = store.get_serving_state(user, now=T0)
        assert store.round_trips - before == 1  # type: ignore[attr-defined]
        assert serving == full._replace(recent=[])
    assert store.get_serving_state("u1", now=T0).suppressed == {"b"}
    assert store.get_serving_state("u1", now=T0 + 61).suppressed == set()


def test_resp_command_counts_bytes_not_characters() -> None:
    from recsys.store.redis_store import resp_command

    assert resp_command("GET", "é") == "*2\r\n$3\r\nGET\r\n$2\r\né\r\n"


def test_scripts_are_the_package_lua_files() -> None:
    from importlib import resources

    from recsys.store.redis_store import SCRIPTS, script_sources

    lua = resources.files("recsys.store.lua")
    assert set(script_sources()) == set(SCRIPTS) == {"batch", "suppress", "sentiment"}
    for name, source in script_sources().items():
        assert source == lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        assert "redis.call(" in source


# ------------------------------------------------------------------- outages (Redis only)
@pytest.mark.integration
def test_serving_read_survives_a_redis_restart_and_reports_an_outage(
    redis_server_factory: Callable[..., Any], key_prefix: str
) -> None:
    """The serving read's own connection: replaced after a restart, StoreUnavailableError
    (never a redis-py error) once the server is gone."""
    from recsys.redis_io import make_redis
    from recsys.store.redis_store import RedisFeatureStore

    server = redis_server_factory(appendonly=False)
    keys = KeySchema(key_prefix)
    store = RedisFeatureStore(make_redis(server.url, timeout_s=0.5), keys)
    try:
        client = make_redis(server.url)
        client.hset(keys.weights("u"), mapping={"a": 2.0})
        client.close()
        assert store.get_serving_state("u").weights == {"a": 2.0}
        server.stop()
        server.start()
        # the connection the old server closed is replaced without the caller noticing
        # (the data may or may not have survived the restart; the read must not fail)
        assert store.get_serving_state("u").weights in ({}, {"a": 2.0})
        server.stop()
        with pytest.raises(StoreUnavailableError):
            store.get_serving_state("u")
    finally:
        store.close()


@pytest.mark.integration
def test_every_redis_call_raises_store_unavailable_when_redis_is_down(
    redis_server_factory: Callable[..., Any], key_prefix: str
) -> None:
    """Services catch one error type, recsys.errors.UnavailableError, and import no redis."""
    from recsys.store import open_store

    server = redis_server_factory(appendonly=False)
    store = open_store(server.url, prefix=key_prefix, config=CFG, timeout_s=0.5)
    assert store.ping() is True
    store.apply_events([ev(1)], now=T0)
    server.stop()
    calls: dict[str, Callable[[], object]] = {
        "ping": store.ping,
        "apply_events": lambda: store.apply_events([ev(2)], now=T0),
        "begin_apply": lambda: store.begin_apply([ev(3)], now=T0).result(),
        "get_user_state": lambda: store.get_user_state("u1", now=T0),
        "get_serving_state": lambda: store.get_serving_state("u1", now=T0),
        "trending": lambda: store.trending(5, now=T0),
        "counters": store.counters,
        "forget_user": lambda: store.forget_user("u1"),
        "forgotten_users": store.forgotten_users,
        "suppress": lambda: store.suppress("u1", "x", 60, now=T0),
        "unsuppress": lambda: store.unsuppress("u1", "x", now=T0),
        "update_sentiment": lambda: store.update_sentiment("u1", 0.5, T0, 3600),
        "get_sentiment": lambda: store.get_sentiment("u1"),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(StoreUnavailableError) as info:
                call()
            assert isinstance(info.value, UnavailableError), name
            assert info.value.status == "UNAVAILABLE", name
    finally:
        store.close()


@pytest.mark.integration
def test_pending_apply_result_raises_store_unavailable_and_the_batch_replays(
    redis_server_factory: Callable[..., Any], key_prefix: str
) -> None:
    """A batch sent but never answered (Redis stalled past the timeout) fails at result();
    the connection is dropped, and replaying the batch applies it exactly once."""
    from recsys.redis_io import make_redis
    from recsys.store.redis_store import RedisFeatureStore

    server = redis_server_factory(appendonly=False)
    store = RedisFeatureStore(make_redis(server.url, timeout_s=0.3), KeySchema(key_prefix), CFG)
    admin = make_redis(server.url)
    try:
        store.apply_events([ev(9999, user="warm-up")], now=T0)  # scripts loaded
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        pending = store.begin_apply([ev(1), ev(2)], now=T0)
        with pytest.raises(StoreUnavailableError):
            pending.result()
        time.sleep(1.6)  # the pause ends; the stalled script ran after all, or not
        assert store.apply_events([ev(1), ev(2)], now=T0).events == 2
        assert store.get_user_state("u1", now=T0).weights == {"i1": 4.0}
        assert store.counters() == {"click": 3}  # the warm-up event and the two
    finally:
        admin.close()
        store.close()


# ---------------------------------------------------------------------------- open_store
def test_open_store_memory_url_is_the_in_memory_store() -> None:
    from recsys.store import open_store

    assert isinstance(open_store("memory://", config=CFG), InMemoryFeatureStore)


@pytest.mark.integration
def test_open_store_checks_redis_at_open_unless_told_not_to(
    redis_url: str, key_prefix: str, redis_server_factory: Callable[..., Any]
) -> None:
    from recsys.store import open_store
    from recsys.store.redis_store import RedisFeatureStore

    store = open_store(redis_url, prefix=key_prefix)
    try:
        assert isinstance(store, RedisFeatureStore) and not store.cluster
        assert set(store._sha) == {"batch", "suppress", "sentiment"}  # loaded at open
    finally:
        store.close()
    gone = redis_server_factory(appendonly=False)
    gone.stop()
    with pytest.raises(ConfigError, match="REDIS_URL"):
        open_store(gone.url, prefix=key_prefix, timeout_s=0.5)
    unchecked = open_store(gone.url, prefix=key_prefix, timeout_s=0.5, check=False)
    try:
        with pytest.raises(StoreUnavailableError):
            unchecked.ping()
    finally:
        unchecked.close()


# ------------------------------------------------------------------------- scan patterns
@pytest.mark.integration
def test_scan_patterns_match_their_own_prefix_and_kind_only(redis_client: Any) -> None:
    """The schema's SCAN patterns treat the prefix literally (glob characters included)."""
    odd = KeySchema("t[1]*?")
    other = KeySchema("t1x")  # what the unescaped pattern t[1]*? would also match
    try:
        for schema in (odd, other):
            redis_client.hset(schema.weights("u:1"), "a", 1)
            redis_client.sadd(schema.seen("u:1"), "a")
            redis_client.hset(schema.counters(), "click", 1)
            redis_client.set(schema.forgotten("u:1"), T0)

        def scan(pattern: str) -> set[str]:
            return {k.decode() for k in redis_client.scan_iter(match=pattern, count=1000)}

        mine = {odd.weights("u:1"), odd.seen("u:1"), odd.forgotten("u:1")}
        assert scan(odd.weights_pattern()) == {odd.weights("u:1")}
        assert scan(odd.forgotten_pattern()) == {odd.forgotten("u:1")}
        assert scan(odd.user_pattern()) == mine
        assert scan(odd.global_pattern()) == {odd.counters()}
        assert scan(odd.prefix_pattern()) == {*mine, odd.counters()}
        assert odd.user_of_weights_key(odd.weights("u:1")) == "u:1"
        assert odd.user_of_weights_key(odd.seen("u:1")) is None
        assert odd.user_of_weights_key(other.weights("u:1")) is None
        assert odd.user_of_forgotten_key(odd.forgotten("u:1")) == "u:1"
        assert odd.user_of_forgotten_key(odd.weights("u:1")) is None
        assert odd.user_of_forgotten_key(other.forgotten("u:1")) is None
    finally:
        for schema in (odd, other):
            redis_client.delete(schema.weights("u:1"), schema.seen("u:1"), schema.counters(),
                                schema.forgotten("u:1"))  # fmt: skip
