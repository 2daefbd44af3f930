"""The recommender's request logic on a tiny hand-built model and the in-memory store.

The model has two clusters with orthogonal factors (A items along x, B items along y), so
which cluster a user gets is decided by their history alone, and one cold item (genre vector)
to check the content reason. Store outages are simulated with a store that raises
ConnectionError (a pure unit test: the real Redis path is in tests/integration).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest
from tiny_recommender import COLD, A, B, tiny_model

from recsys.errors import InvalidArgumentError, NotFoundError
from recsys.store.memory import InMemoryFeatureStore
from recsys.store.model import FeatureEvent, UserState
from services.recommender.model import Model
from services.recommender.service import (
    REASON_COLLABORATIVE,
    REASON_CONTENT,
    REASON_POPULARITY,
    REASON_TRENDING,
    Filters,
    Limits,
    RecommenderService,
    RecommendQuery,
    RecommendResult,
    SimilarQuery,
    StateReader,
    Widget,
    check_id,
    combine_weights,
)

_SEQ = iter(range(10**9))


def click(store: InMemoryFeatureStore, user: str, item: str, weight: float = 2.0) -> None:
    n = next(_SEQ)
    store.apply_events([FeatureEvent(f"e{n}", user, item, "click", weight, time.time())])


class DownStore(InMemoryFeatureStore):
    """A store whose every read fails as an unreachable Redis would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        self.calls += 1
        raise ConnectionError("connection refused")

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        self.calls += 1
        raise ConnectionError("connection refused")


def make_service(
    store: Any = None, model: Model | None = None, **limits: Any
) -> tuple[RecommenderService, InMemoryFeatureStore]:
    store = InMemoryFeatureStore() if store is None else store
    m = model or tiny_model()
    reader = StateReader(store, unavailable=(OSError,), retry_s=limits.pop("retry_s", 60.0))
    return RecommenderService(lambda: m, reader, Limits(**limits)), store


def rec(service: RecommenderService, user: str, k: int = 3, **filters: Any) -> Any:
    f = Filters(
        tuple(filters.get("exclude", ())),
        filters.get("include_seen", False),
        tuple(filters.get("categories", ())),
    )
    return service.recommend(RecommendQuery(user, k, f))


# ------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("user", "k", "fragment"),
    [
        ("", 3, "must not be empty"),
        ("   ", 3, "must not be empty"),
        ("u" * 129, 3, "maximum is 128"),
        ("u\x00x", 3, "control characters"),
        ("ua", 0, "must be positive"),
        ("ua", -5, "must be positive"),
        ("ua", 201, "exceeds the maximum of 200"),
    ],
)
def test_recommend_rejects_bad_ids_and_k_with_a_message(user: str, k: int, fragment: str) -> None:
    service, _ = make_service()
    with pytest.raises(InvalidArgumentError, match=fragment):
        rec(service, user, k)


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"exclude": [""]}, "exclude_item_ids entry must not be empty"),
        ({"exclude": ["x" * 200]}, "maximum is 128"),
        ({"exclude": [f"i{n}" for n in range(1001)]}, "has 1001 ids"),
        ({"categories": ["Horror"]}, "unknown category 'Horror'"),
        ({"categories": [" "]}, "empty entry"),
    ],
)
def test_malformed_filters_are_invalid_argument(filters: dict[str, Any], fragment: str) -> None:
    service, _ = make_service()
    with pytest.raises(InvalidArgumentError, match=fragment):
        rec(service, "ua", 3, **filters)


def test_unicode_ids_are_accepted() -> None:
    assert check_id("user_id", "użytkownik-🙂", 128) == "użytkownik-🙂"


def test_control_and_surrogate_characters_are_refused_exactly_as_unicode_classifies_them() -> None:
    """check_id's pattern against ``unicodedata`` on every code point, so the fast check
    refuses exactly the Cc and Cs characters and nothing else."""
    import unicodedata

    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        bad = unicodedata.category(ch) in ("Cc", "Cs")
        if bad:
            with pytest.raises(InvalidArgumentError, match="control characters"):
                check_id("user_id", f"u{ch}", 128)
        elif cp % 997 == 0 or cp < 0x3000:  # every refusal checked; a spread of acceptances
            assert check_id("user_id", f"u{ch}", 128)


def test_similar_items_unknown_item_is_not_found() -> None:
    service, _ = make_service()
    with pytest.raises(NotFoundError, match="'nope' is not in the catalog"):
        service.similar_items(SimilarQuery("nope", 3))


def test_explain_unknown_item_is_not_found_and_negative_k_invalid() -> None:
    service, _ = make_service()
    with pytest.raises(NotFoundError):
        service.explain("ua", "nope")
    with pytest.raises(InvalidArgumentError):
        service.explain("ua", "a1", -1)


# --------------------------------------------------------------------------- recommend
def test_known_user_without_live_events_gets_their_cluster_without_history() -> None:
    service, _ = make_service()
    result = rec(service, "ua", 3)
    ids = [i.item_id for i in result.items]
    assert ids == ["a1", "a2", "a3"]  # a0 was seen in training
    assert {i.reason for i in result.items} == {REASON_COLLABORATIVE}
    assert result.model_version == "20250101T000000Z-00000001"
    assert not result.degraded


def test_live_clicks_are_excluded_and_change_the_ranking() -> None:
    service, store = make_service()
    before = [i.item_id for i in rec(service, "ua", 3).items]
    for item in ("b0", "b1", "b2"):
        click(store, "ua", item, weight=8.0)
    after = [i.item_id for i in rec(service, "ua", 3).items]
    assert before[0].startswith("a")
    assert after[0] == "b3"  # B now dominates; b0..b2 are seen and dropped
    assert not {"b0", "b1", "b2"} & set(after)


def test_brand_new_user_with_clicks_is_personalised_without_retraining() -> None:
    service, store = make_service()
    for item in ("b0", "b1", "b2"):
        click(store, "newcomer", item)
    result = rec(service, "newcomer", 2)
    assert result.items[0].item_id == "b3"
    assert result.items[0].reason == REASON_COLLABORATIVE
    assert result.source == "foldin"


def test_suppressed_and_requested_exclusions_are_dropped() -> None:
    service, store = make_service()
    store.suppress("ua", "a1", ttl_s=3600)
    ids = [i.item_id for i in rec(service, "ua", 3, exclude=["a2"]).items]
    assert "a1" not in ids and "a2" not in ids
    assert ids[0] == "a3"


def test_include_seen_keeps_seen_items_but_not_suppressed_ones() -> None:
    service, store = make_service()
    click(store, "ua", "a1")
    store.suppress("ua", "a2", ttl_s=3600)
    ids = [i.item_id for i in rec(service, "ua", 9, include_seen=True).items]
    assert "a0" in ids and "a1" in ids and "a2" not in ids


def test_category_filter_keeps_only_matching_items() -> None:
    service, _ = make_service()
    ids = [i.item_id for i in rec(service, "ua", 4, categories=["comedy"]).items]
    assert ids and all(i.startswith("b") or i == COLD for i in ids)


def test_cold_item_is_marked_as_content_reason() -> None:
    service, _ = make_service()
    items = rec(service, "ua", 8, include_seen=True).items
    reasons = {i.item_id: i.reason for i in items}
    assert reasons[COLD] == REASON_CONTENT
    assert reasons["a1"] == REASON_COLLABORATIVE


def test_user_without_history_gets_trending_then_popularity() -> None:
    service, store = make_service()
    for n in range(3):
        click(store, f"other{n}", "b1")
    click(store, "other9", "a2")
    result = rec(service, "stranger", 4, exclude=["a2"])
    ids = [i.item_id for i in result.items]
    reasons = [i.reason for i in result.items]
    assert ids[0] == "b1" and reasons[0] == REASON_TRENDING
    assert "a2" not in ids
    assert reasons[1:] == [REASON_POPULARITY] * 3
    assert ids == ["b1", "a3", "b3", "b2"]  # popularity order without b1 and a2
    assert result.source == "trending"


def test_user_without_history_and_no_trending_gets_popularity() -> None:
    service, _ = make_service()
    result = rec(service, "stranger", 2)
    assert [i.item_id for i in result.items] == ["a3", "b3"]
    assert {i.reason for i in result.items} == {REASON_POPULARITY}
    assert result.source == "popular"


def test_trending_respects_the_category_filter() -> None:
    service, store = make_service()
    click(store, "x", "b1")
    click(store, "y", "a1")
    ids = [i.item_id for i in rec(service, "stranger", 1, categories=["Action"]).items]
    assert ids == ["a1"]


def test_trending_is_cached_between_requests() -> None:
    service, store = make_service(trending_cache_s=60.0)
    click(store, "x", "b1")
    assert rec(service, "stranger", 1).items[0].item_id == "b1"
    for n in range(5):
        click(store, f"y{n}", "a1")
    assert rec(service, "stranger", 1).items[0].item_id == "b1"  # still the cached list
    fresh, _ = make_service(store, trending_cache_s=0.0)
    assert rec(fresh, "stranger", 1).items[0].item_id == "a1"


# ----------------------------------------------------------------------------- degraded
def test_store_outage_answers_from_the_model_and_marks_degraded() -> None:
    store = DownStore()
    service, _ = make_service(store)
    known = rec(service, "ua", 2)
    assert known.degraded and [i.item_id for i in known.items] == ["a1", "a2"]
    unknown = rec(service, "stranger", 2)
    assert unknown.degraded
    assert [i.reason for i in unknown.items] == [REASON_POPULARITY] * 2


def test_breaker_skips_the_store_after_a_failure() -> None:
    store = DownStore()
    service, _ = make_service(store, retry_s=60.0)
    for _ in range(5):
        rec(service, "ua", 2)
    assert store.calls == 1


def test_breaker_retries_after_the_interval() -> None:
    store = DownStore()
    service, _ = make_service(store, retry_s=0.0)
    for _ in range(3):
        rec(service, "ua", 2)
    assert store.calls == 3


# ------------------------------------------------------------------ similar, explain
def test_similar_items_returns_the_cluster_and_honours_exclusions() -> None:
    service, _ = make_service()
    result = service.similar_items(SimilarQuery("a0", 3, Filters(("a1",))))
    ids = [i.item_id for i in result.items]
    assert ids == ["a2", "a3", COLD]
    assert result.items[0].reason == REASON_COLLABORATIVE


def test_similar_items_of_a_cold_item_use_content() -> None:
    service, _ = make_service()
    result = service.similar_items(SimilarQuery(COLD, 2))
    assert result.items and all(i.reason == REASON_CONTENT for i in result.items)


def test_explain_names_the_contributing_history_items() -> None:
    service, store = make_service()
    click(store, "u9", "b0", 8.0)
    click(store, "u9", "a0", 1.0)
    result = service.explain("u9", "b2")
    assert result.contributions[0][0] == "b0"
    assert result.score == pytest.approx(sum(w for _, w in result.contributions), rel=1e-5)
    assert len(result.contributions) == 2


def test_explain_of_a_user_without_history_is_empty() -> None:
    service, _ = make_service()
    result = service.explain("stranger", "a1", 3)
    assert result.score == 0.0 and result.contributions == []


# -------------------------------------------------------------------------------- batch
class CountingStore(InMemoryFeatureStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        self.reads += 1
        return super().get_user_state(user_id, now)


def test_batch_entries_fail_alone_and_state_is_read_once_per_user() -> None:
    store = CountingStore()
    service, _ = make_service(store)
    results = service.batch(
        [
            Widget("home", RecommendQuery("ua", 2)),
            Widget("more", RecommendQuery("ua", 3)),
            Widget("broken", RecommendQuery("ua", 0)),
            Widget("similar", SimilarQuery("b0", 2)),
            Widget("missing", SimilarQuery("zzz", 2)),
            Widget("empty", None),
        ]
    )
    assert [r.widget_id for r in results] == ["home", "more", "broken", "similar", "missing",
                                              "empty"]  # fmt: skip
    assert results[0].result is not None and results[1].result is not None
    assert isinstance(results[2].error, InvalidArgumentError)
    assert results[3].result is not None
    assert isinstance(results[4].error, NotFoundError)
    assert isinstance(results[5].error, InvalidArgumentError)
    assert store.reads == 1


def test_batch_over_the_maximum_is_rejected() -> None:
    service, _ = make_service(max_batch=2)
    with pytest.raises(InvalidArgumentError, match="maximum is 2"):
        service.batch([Widget(str(n), RecommendQuery("ua", 1)) for n in range(3)])


# ------------------------------------------------------------------------ history modes
def test_combine_weights_modes() -> None:
    history = {"a": 1.0, "b": 3.0}
    live = {"b": 2.0, "c": 5.0}
    assert combine_weights(history, live, "max") == {"a": 1.0, "b": 3.0, "c": 5.0}
    assert combine_weights(history, live, "sum") == {"a": 1.0, "b": 5.0, "c": 5.0}
    assert combine_weights(history, live, "none") == live
    assert combine_weights({}, live, "sum") == live


def test_model_swap_is_seen_by_the_next_request_only() -> None:
    models = [tiny_model("20250101T000000Z-00000001")]
    reader = StateReader(InMemoryFeatureStore())
    service = RecommenderService(lambda: models[0], reader)
    first = rec(service, "ua", 1)
    models[0] = tiny_model("20250102T000000Z-00000002")
    second = rec(service, "ua", 1)
    assert (first.model_version, second.model_version) == (
        "20250101T000000Z-00000001",
        "20250102T000000Z-00000002",
    )


@pytest.mark.parametrize("mode", ["max", "sum", "none"])
def test_recommend_ranks_as_model_recommend_for_every_user_and_filter(mode: str) -> None:
    """Regression for the single recommend path: whatever the user (trained, new, with or
    without live state) and the filters (exclusions, suppression, ``include_seen``,
    categories), the service ranks and scores exactly as ``Model.recommend`` on the weights
    ``FOLDIN_HISTORY`` combines, with the same seen-filter."""
    import random as _random

    rng = _random.Random(4)
    model = tiny_model()
    service, store = make_service(model=model, history_mode=mode)
    items = [*A, *B, COLD]
    compared = {"foldin": 0, "model": 0}
    for n in range(120):
        user = rng.choice(["ua", "ub", f"new{n}"])
        if user != "ua":  # ua never has live state: the history-only (or trained) vector
            for item in rng.sample(items, rng.randrange(1, 4)):
                click(store, user, item, weight=rng.choice((1.0, 2.0, 8.0)))
        if rng.random() < 0.2:
            store.suppress(user, rng.choice(items), ttl_s=3600)
        excluded = rng.sample(items, rng.randrange(0, 3))
        include_seen = rng.random() < 0.25
        categories = rng.choice([[], [], ["Action"], ["comedy"]])
        k = rng.randrange(1, 9)
        got = rec(service, user, k, exclude=excluded, include_seen=include_seen,
                  categories=categories)  # fmt: skip
        state = store.get_user_state(user)
        merged = combine_weights(model.user_history(user), state.weights, mode)
        hidden = set(excluded) | state.suppressed | (set() if include_seen else state.seen)
        want = model.recommend(user, merged or None, k, exclude=hidden,
                               filter_seen=not include_seen,
                               filter_categories=categories or None)  # fmt: skip
        assert got.source == want.source
        assert [i.item_id for i in got.items] == want.ids
        assert [i.score for i in got.items] == pytest.approx(want.scores.tolist())
        compared[got.source] += 1
    assert compared["foldin"] and (compared["model"] or mode != "none")


def test_history_mode_none_still_drops_the_training_history() -> None:
    """Regression: ``FOLDIN_HISTORY=none`` keeps the training history out of the fold-in,
    not out of the seen-filter, on every path: with the trained vector (no live state) and
    with a category filter, a user is never shown an item they had in training."""
    service, store = make_service(history_mode="none")
    trained = rec(service, "ua", 2)
    assert trained.source == "model"
    assert [i.item_id for i in trained.items] == ["a1", "a2"]  # a0: ua's training item
    click(store, "ua", "a1")
    folded = rec(service, "ua", 2, categories=["Action"])
    assert folded.source == "foldin"
    assert [i.item_id for i in folded.items] == ["a2", "a3"]  # a0 trained, a1 live
    assert rec(service, "ua", 9, include_seen=True).items[0].item_id == "a0"


def test_live_items_unknown_to_the_model_fall_back_to_trending_without_them() -> None:
    """Regression: live weights that name no item of the model give no vector; the user
    gets the cold-start lists, which still leave out the items they clicked."""
    service, store = make_service()
    click(store, "other", "new-film")
    click(store, "other", "b2")
    click(store, "stranger", "new-film")
    result = rec(service, "stranger", 2)
    assert result.source == "trending"
    assert [i.item_id for i in result.items] == ["b2", "a3"]
    assert [i.reason for i in result.items] == [REASON_TRENDING, REASON_POPULARITY]


def test_history_only_vector_is_solved_once_per_model_and_dropped_on_swap() -> None:
    """A user without live state folds in the same rows each time: one solve per model."""
    models = [tiny_model("20250101T000000Z-00000001")]
    service = RecommenderService(lambda: models[0], StateReader(InMemoryFeatureStore()))
    solves: list[str] = []

    def counting(model: Model) -> None:
        solve = model.recalculate_rows

        def wrapped(rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
            solves.append(model.version)
            return solve(rows, raw)

        model.recalculate_rows = wrapped  # type: ignore[method-assign]

    counting(models[0])
    first, again = rec(service, "ua", 2), rec(service, "ua", 2)
    assert first.items == again.items and first.source == again.source
    assert solves == ["20250101T000000Z-00000001"]
    models[0] = tiny_model("20250102T000000Z-00000002")
    counting(models[0])
    rec(service, "ua", 2)
    assert solves[-1] == "20250102T000000Z-00000002" and len(solves) == 2


def test_history_mode_none_without_live_state_uses_the_trained_vector() -> None:
    """FOLDIN_HISTORY=none folds in Redis weights only: a user with training history and
    nothing live gets the trained vector (source "model"), not a fold-in of the history."""
    none_service, _ = make_service(history_mode="none")
    max_service, _ = make_service(history_mode="max")
    assert rec(none_service, "ua", 2).source == "model"
    assert rec(max_service, "ua", 2).source == "foldin"


# ------------------------------------------------------------------------ forgotten users
class FlakyStore(InMemoryFeatureStore):
    """The in-memory store, with reads that fail as an unreachable Redis while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        if self.down:
            raise ConnectionError("connection refused")
        return super().get_user_state(user_id, now)


def test_forgotten_user_gets_only_anonymous_answers_at_once() -> None:
    """Regression: after `forget-user` a user in the training data still got a personalised
    list from the trained vector and Explain still listed their history; now every answer
    is the one a never-seen visitor gets, from the next request on, without retraining."""
    service, store = make_service()
    click(store, "ua", "a1")
    store.suppress("ua", "a3", ttl_s=3600)
    store.update_sentiment("ua", -0.8, time.time(), 3600.0)
    assert rec(service, "ua", 3).source == "foldin"
    assert service.explain("ua", "a2").contributions
    store.forget_user("ua")
    forgotten = rec(service, "ua", 3)
    stranger = rec(service, "never-seen", 3)
    assert forgotten.items == stranger.items and forgotten.source == stranger.source
    assert {i.reason for i in forgotten.items} <= {REASON_TRENDING, REASON_POPULARITY}
    explained = service.explain("ua", "a2")
    assert (explained.score, explained.contributions, explained.sentiment) == (0.0, [], None)
    # exclusions the caller asks for still apply; late events of the user do not count
    click(store, "ua", "b1")
    assert "a3" not in [i.item_id for i in rec(service, "ua", 3, exclude=["a3"]).items]
    assert rec(service, "ua", 3).items == rec(service, "never-seen", 3).items
    (widget,) = service.batch([Widget("home", RecommendQuery("ua", 3))])
    assert isinstance(widget.result, RecommendResult)
    assert widget.result.items == rec(service, "never-seen", 3).items


def test_forgotten_user_stays_anonymous_while_the_store_is_down() -> None:
    """Regression: a store outage must not bring a forgotten user's trained vector back; a
    user this process never saw forgotten gets the model's answer, as before."""
    store = FlakyStore()
    service, _ = make_service(store, retry_s=0.0)
    store.forget_user("ua")
    assert rec(service, "ua", 2).source == "popular"
    store.down = True
    during = rec(service, "ua", 2)
    assert during.degraded and during.source == "popular"
    assert service.explain("ua", "a2").contributions == []
    assert rec(service, "ub", 2).source == "foldin"  # not known to be forgotten: history


def test_explain_reports_the_users_sentiment_average_and_recommend_never_reads_it() -> None:
    """Regression: the per-user sentiment average was written and never read. Explain
    reports it; Recommend, on the hot path, still makes one store read per request."""
    service, store = make_service()
    store.update_sentiment("ua", -0.5, time.time(), 3600.0)
    assert service.explain("ua", "a2").sentiment == pytest.approx(-0.5)
    assert service.explain("ub", "b2").sentiment is None
    before = store.round_trips
    rec(service, "ua", 2)
    assert store.round_trips - before == 1


def test_explain_sentiment_is_left_out_and_degraded_when_the_store_is_down() -> None:
    store = FlakyStore()
    service, _ = make_service(store, retry_s=60.0)
    store.update_sentiment("ua", 0.5, time.time(), 3600.0)
    store.down = True
    result = service.explain("ua", "a2")
    assert result.degraded and result.sentiment is None and result.contributions


def test_batch_rejects_an_over_long_widget_id_instead_of_echoing_it() -> None:
    """Regression: BatchRecommend echoed a widget_id of any length (1 MB in, 1 MB out per
    widget answer); it is held to MAX_ID_LENGTH like every other id."""
    service, _ = make_service()
    ok = service.batch([Widget("w" * 128, RecommendQuery("ua", 1))])
    assert ok[0].result is not None
    with pytest.raises(InvalidArgumentError, match=r"widgets\[1\]\.widget_id is 129 char"):
        service.batch([Widget("home", RecommendQuery("ua", 1)),
                       Widget("w" * 129, RecommendQuery("ua", 1))])  # fmt: skip
    assert service.batch([Widget("", SimilarQuery("a0", 1))])[0].result is not None
