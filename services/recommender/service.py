"""The recommender's request logic, free of any transport: validation, user state, fallbacks.

The gRPC servicer (``server.py``) converts messages to the plain types here and back, so
everything that decides *what* to answer lives in this module and is unit-tested with the
in-memory FeatureStore and a tiny model.

Per request, in order:

1. Validate (ids, ``k``, filters). Failures raise :class:`~recsys.errors.InvalidArgumentError`
   or :class:`~recsys.errors.NotFoundError`, which know their gRPC status.
2. Take the current model once (a hot reload swaps the holder's reference; this request keeps
   the model it started with, so its answer is consistent and carries that version).
3. Read the user's state (weights, seen, suppressed) in one store round trip. If the store is
   down, answer from the model alone and mark the answer ``degraded``; a breaker then skips the
   store for ``redis_retry_s`` so an outage costs no per-request timeouts.
4. Pick the user's vector: the fold-in of their weights (Redis, combined with the training
   history per ``history_mode``) when any item is usable, else the trained vector of a user
   the model knows. Score the catalog, drop seen, excluded and suppressed items, keep the
   requested categories: the same steps for every user and filter.
5. A user with no vector at all gets the decayed trending list from the store, topped up with
   the model's popularity order.

A user who asked to be forgotten (the store's forgotten record, read in step 3) skips step 4:
no trained vector, no training or live history, no seen or suppressed items, only the
answers any anonymous visitor gets (the record does not expire).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from recsys.errors import InvalidArgumentError, NotFoundError, RecsysError
from recsys.store.base import FeatureStore
from recsys.store.model import Sentiment, UserState
from services.recommender.ann import SearchSettings
from services.recommender.model import (
    SOURCE_FOLDIN,
    SOURCE_MODEL,
    SOURCE_POPULAR,
    SOURCE_TRENDING,
    Model,
    usable,
)

V = TypeVar("V")

log = logging.getLogger(__name__)

# Why an item was recommended (mapped one to one onto the proto's Reason enum).
REASON_COLLABORATIVE = "collaborative"
REASON_TRENDING = "trending"
REASON_CONTENT = "content"
REASON_POPULARITY = "popularity"

EMPTY_STATE = UserState(recent=[], seen=set(), weights={}, suppressed=set())

ModelSource = Callable[[], Model]
HISTORY_CACHE_USERS = 200_000
# Forgotten users this process has read the record of, for the answers given while the
# store is unreachable (the record never expires, so an entry never goes stale).
FORGOTTEN_CACHE_USERS = 100_000


@dataclass(frozen=True)
class Limits:
    """Request bounds; the defaults match ``RecommenderSettings``."""

    max_k: int = 200
    default_explain_k: int = 10
    max_id_length: int = 128
    max_exclude: int = 1000
    max_categories: int = 50
    max_batch: int = 16
    history_mode: str = "max"
    trending_cache_s: float = 1.0
    trending_overfetch: int = 50
    redis_retry_s: float = 1.0
    # Catalogs this large are served from the model's ANN index when it has one (ann.py).
    ann_min_items: int = 200_000
    ann: SearchSettings = field(default_factory=SearchSettings)


@dataclass(frozen=True)
class Filters:
    exclude_item_ids: tuple[str, ...] = ()
    include_seen: bool = False
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True)
class RecommendResult:
    user_id: str
    items: list[ScoredItem]
    model_version: str
    degraded: bool = False
    source: str = ""  # foldin / model / trending / popular: which path produced the list


@dataclass(frozen=True)
class SimilarResult:
    item_id: str
    items: list[ScoredItem]
    model_version: str


@dataclass(frozen=True)
class ExplainResult:
    user_id: str
    item_id: str
    score: float
    contributions: list[tuple[str, float]]
    model_version: str
    degraded: bool = False
    # The user's time-decayed feedback sentiment in [-1, 1] (the sentiment service's
    # average), for whoever reads the explanation; None when there is none, the store
    # could not be read, or the user was forgotten. It does not change any ranking.
    sentiment: float | None = None


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    k: int
    filters: Filters = field(default_factory=Filters)


@dataclass(frozen=True)
class SimilarQuery:
    item_id: str
    k: int
    filters: Filters = field(default_factory=Filters)


@dataclass(frozen=True)
class Widget:
    widget_id: str
    query: RecommendQuery | SimilarQuery | None  # None: the widget named no request


@dataclass(frozen=True)
class WidgetResult:
    widget_id: str
    result: RecommendResult | SimilarResult | None = None
    error: RecsysError | None = None


class History(NamedTuple):
    weights: dict[str, float]  # item id -> training weight
    rows: np.ndarray  # the same items' rows in the model (int64)
    raw: np.ndarray  # their training weights, aligned with rows (float32)


# --------------------------------------------------------------------------- validation
# Unicode's control (Cc) and surrogate (Cs) characters: the Cc set is fixed by Unicode's
# stability policy, so this equals ``unicodedata.category(ch) in ("Cc", "Cs")`` on every code
# point (checked in tests/unit/test_recommender_service.py) at a fortieth of the CPU of a
# per-character loop, for each id of every request.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_id(name: str, value: str, max_length: int) -> str:
    """Reject ids that can never name anything: empty, over-long, or with control characters.

    Ids are opaque otherwise (any other Unicode is allowed), so this never second-guesses a
    catalog's naming scheme.
    """
    if not value or not value.strip():
        raise InvalidArgumentError(f"{name} must not be empty")
    if len(value) > max_length:
        raise InvalidArgumentError(
            f"{name} is {len(value)} characters long; the maximum is {max_length}"
        )
    if _CONTROL.search(value) is not None:
        raise InvalidArgumentError(f"{name} contains control characters")
    return value


def check_k(k: int, max_k: int, name: str = "k") -> int:
    if k <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {k}")
    if k > max_k:
        raise InvalidArgumentError(f"{name}={k} exceeds the maximum of {max_k}")
    return k


def combine_weights(
    history: Mapping[str, float], live: Mapping[str, float], mode: str
) -> dict[str, float]:
    """The weights folded in: the model's training history combined with Redis' live weights.

    See ``config.HISTORY_MODES`` for when each mode is right.
    """
    if mode == "none" or not history:
        return dict(live)
    merged = dict(history)
    if mode == "sum":
        for item, w in live.items():
            merged[item] = merged.get(item, 0.0) + w
    else:  # max
        for item, w in live.items():
            old = merged.get(item)
            merged[item] = w if old is None or w > old else old
    return merged


def merge_rows(
    history: History, live_rows: np.ndarray, live_raw: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`combine_weights` followed by the model's filter (:func:`usable`), on arrays.

    ``live_rows`` are the live items' rows (-1: not in the model), ``live_raw`` their
    weights. The result is what a fold-in of the combined weights uses: known rows with a
    positive, finite combined weight, each once. Arrays, not dicts, because this runs on
    every request with live state and a per-item Python loop was a large share of the
    handler's CPU (figures: docs/recommender.md, "How Recommend builds its answer").
    """
    if mode == "none" or history.rows.size == 0:
        return usable(live_rows, live_raw)
    known = live_rows >= 0
    if not known.any():
        return usable(history.rows, history.raw)
    rows = np.concatenate([history.rows, live_rows[known]])
    raw = np.concatenate([history.raw.astype(np.float64), live_raw[known]])
    # Group by row; for "max" the largest weight first in its group (NaN sorts last, so a
    # NaN never beats a number, as in combine_weights).
    order = np.lexsort((-raw, rows)) if mode == "max" else np.argsort(rows, kind="stable")
    rows, raw = rows[order], raw[order]
    first = np.empty(rows.size, dtype=bool)
    first[0] = True
    np.not_equal(rows[1:], rows[:-1], out=first[1:])
    merged = np.add.reduceat(raw, np.flatnonzero(first)) if mode == "sum" else raw[first]
    return usable(rows[first], merged)


# ------------------------------------------------------------------------------ state
class StateReader:
    """Reads user state and trending from the store; turns store outages into ``degraded``.

    ``unavailable`` names the exception types that mean "the store is down" (the wiring passes
    the store's StoreUnavailableError and the OS' connection errors); anything else is a bug
    and propagates. After a failure the store is not asked again for ``retry_s`` seconds, so
    an outage costs each request nothing instead of a connect timeout.
    """

    def __init__(
        self,
        store: FeatureStore | None,
        *,
        unavailable: tuple[type[BaseException], ...] = (OSError,),
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.unavailable = unavailable
        self.retry_s = retry_s
        self.clock = clock
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.failures = 0

    @property
    def healthy(self) -> bool:
        return self.store is not None and self.clock() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self.clock() >= self._down_until
            self._down_until = self.clock() + self.retry_s
            self.failures += 1
        if first:
            log.warning("feature store unavailable; answering from the model alone",
                        extra={"error": repr(exc), "retry_s": self.retry_s})  # fmt: skip

    def user_state(self, user_id: str) -> tuple[UserState, bool]:
        """(state, degraded)."""
        if not self.healthy:
            return EMPTY_STATE, True
        assert self.store is not None
        try:
            return self.store.get_serving_state(user_id), False
        except self.unavailable as exc:
            self._failed(exc)
            return EMPTY_STATE, True

    def trending(self, n: int) -> tuple[list[tuple[str, float]], bool]:
        if not self.healthy:
            return [], True
        assert self.store is not None
        try:
            return self.store.trending(n), False
        except self.unavailable as exc:
            self._failed(exc)
            return [], True

    def sentiment(self, user_id: str) -> tuple[Sentiment | None, bool]:
        """(sentiment, degraded): Explain's read of the user's average, a round trip of its
        own so that Recommend, which never uses it, does not pay for it."""
        if not self.healthy:
            return None, True
        assert self.store is not None
        try:
            return self.store.get_sentiment(user_id), False
        except self.unavailable as exc:
            self._failed(exc)
            return None, True


class TrendingCache:
    """The trending list, re-read at most every ``ttl_s`` (it decays over hours, not ms)."""

    def __init__(self, reader: StateReader, ttl_s: float, clock: Callable[[], float]) -> None:
        self.reader = reader
        self.ttl_s = ttl_s
        self.clock = clock
        self._entry: tuple[float, int, list[tuple[str, float]]] | None = None

    def get(self, n: int) -> tuple[list[tuple[str, float]], bool]:
        entry = self._entry  # one read: another thread may replace it
        now = self.clock()
        if (
            entry is not None
            and now - entry[0] < self.ttl_s
            and (
                entry[1] >= n or len(entry[2]) < entry[1]  # a short list means there is no more
            )
        ):
            return entry[2][:n], False
        rows, degraded = self.reader.trending(n)
        if not degraded:
            self._entry = (now, n, rows)
        return rows, degraded


class PerModelCache(Generic[V]):
    """Per-user values derived from one model: replaced wholesale when another model is
    asked about (a swap) or when ``limit`` users are held. Owner and values change in one
    assignment, so a request never sees one model's values under another model."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._state: tuple[Model | None, dict[str, V]] = (None, {})

    def get(self, model: Model, user_id: str, make: Callable[[], V]) -> V:
        owner, values = self._state
        if owner is not model:
            values = {}
            self._state = (model, values)
        found = values.get(user_id)
        if found is None:
            found = make()
            if len(values) >= self.limit:
                values.clear()
            values[user_id] = found
        return found


# ---------------------------------------------------------------------------- service
class RecommenderService:
    def __init__(
        self,
        models: ModelSource,
        reader: StateReader,
        limits: Limits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models
        self.reader = reader
        self.limits = limits or Limits()
        self.trending = TrendingCache(reader, self.limits.trending_cache_s, clock)
        self._history: PerModelCache[History] = PerModelCache(HISTORY_CACHE_USERS)
        self._vectors: PerModelCache[np.ndarray] = PerModelCache(HISTORY_CACHE_USERS)
        self._forgotten: set[str] = set()

    def is_forgotten(self, user_id: str, state: UserState, degraded: bool) -> bool:
        """Whether to answer as for an anonymous visitor.

        The store's record decides; while the store cannot be read (``degraded``), the
        users this process has seen forgotten stay forgotten, so an outage does not bring
        a forgotten user's trained vector back. A record deleted by hand is noticed on
        the next successful read.
        """
        if state.forgotten:
            if len(self._forgotten) >= FORGOTTEN_CACHE_USERS:
                self._forgotten.clear()
            self._forgotten.add(user_id)
            return True
        if degraded:
            return user_id in self._forgotten
        self._forgotten.discard(user_id)
        return False

    def history(self, model: Model, user_id: str) -> History:
        """The user's training history (ids → weights, and their rows), cached per model.

        It never changes for a model, and reading it from the memory-mapped CSR arrays costs
        more than the fold-in itself (figures: docs/recommender.md, "How Recommend builds its
        answer"). The cache holds at most ``HISTORY_CACHE_USERS`` users and is replaced
        wholesale when the model is swapped. Callers must not mutate what it returns.
        """

        def read() -> History:
            rows, raw = model.user_history_rows(user_id)
            ids = model.item_ids
            weights = dict(zip([ids[r] for r in rows.tolist()], raw.tolist(), strict=True))
            return History(weights, rows, raw)

        return self._history.get(model, user_id, read)

    def history_vector(self, model: Model, user_id: str, history: History) -> np.ndarray:
        """The user's vector folded in from the training history alone, cached per model.

        A user with no live state in Redis folds in the same rows on every request until
        the model is swapped, so the merge and the solve are done once, on a miss
        (bit-identical to doing them again). Empty (size 0) when nothing is usable
        (``FOLDIN_HISTORY`` ``none``, or no known item), so that answer is cached too and
        the caller falls back to the trained vector. Same bound and lifetime as
        :meth:`history`; 256 bytes a user at 64 factors.
        """

        def solve() -> np.ndarray:
            no_live = np.empty(0, dtype=np.int64)
            rows, raw = merge_rows(history, no_live, no_live.astype(np.float64),
                                   self.limits.history_mode)  # fmt: skip
            if rows.size == 0:
                return np.empty(0, dtype=np.float32)
            return model.recalculate_rows(rows, raw)

        return self._vectors.get(model, user_id, solve)

    # -- validation --------------------------------------------------------------------
    def _filters(self, filters: Filters, model: Model) -> Filters:
        lim = self.limits
        if len(filters.exclude_item_ids) > lim.max_exclude:
            raise InvalidArgumentError(
                f"filters.exclude_item_ids has {len(filters.exclude_item_ids)} ids; "
                f"the maximum is {lim.max_exclude}"
            )
        for item in filters.exclude_item_ids:
            check_id("filters.exclude_item_ids entry", item, lim.max_id_length)
        if len(filters.categories) > lim.max_categories:
            raise InvalidArgumentError(
                f"filters.categories has {len(filters.categories)} entries; "
                f"the maximum is {lim.max_categories}"
            )
        if filters.categories:
            known = {g.lower() for g in model.genres}
            for cat in filters.categories:
                if not cat.strip():
                    raise InvalidArgumentError("filters.categories has an empty entry")
                if cat.lower() not in known:
                    sample = ", ".join(sorted(model.genres)[:8]) or "none in this model"
                    raise InvalidArgumentError(
                        f"unknown category {cat[:64]!r}; known categories include: {sample}"
                    )
        return filters

    # -- recommend ---------------------------------------------------------------------
    def recommend(
        self, query: RecommendQuery, *, state: tuple[UserState, bool] | None = None
    ) -> RecommendResult:
        """One path for every request: pick the user's vector (:meth:`_user_vector`), drop
        what must not be shown, take the top ``k``; only a user with no vector at all leaves
        it, for the trending and popularity lists (:meth:`_cold_start`).

        Exclusions are applied to the score array by row, the way ``Model.recommend`` does
        with ``filter_seen``: the training history and the live items unless
        ``include_seen``, and always the requested and suppressed items, so every user and
        every filter combination is scored by the same few array operations.
        """
        lim = self.limits
        user_id = check_id("user_id", query.user_id, lim.max_id_length)
        k = check_k(query.k, lim.max_k)
        model = self.models()
        filters = self._filters(query.filters, model)
        user_state, degraded = state if state is not None else self.reader.user_state(user_id)
        categories = list(filters.categories) or None
        if self.is_forgotten(user_id, user_state, degraded):
            anonymous = set(filters.exclude_item_ids)
            return self._cold_start(model, user_id, k, anonymous, categories, degraded)
        history = self.history(model, user_id)
        live = user_state.weights
        include_seen = filters.include_seen
        excluded: set[str] = set(filters.exclude_item_ids) | user_state.suppressed
        if not include_seen:
            excluded |= user_state.seen
        live_rows = model.lookup_rows(live)
        vector, source = self._user_vector(model, user_id, history, live, live_rows)
        if vector is None:
            cold_exclude = excluded if include_seen else excluded | set(live)
            return self._cold_start(model, user_id, k, cold_exclude, categories, degraded)
        parts = []
        if not include_seen:
            parts += [history.rows, live_rows[live_rows >= 0]]
            excluded = excluded.difference(live)  # dropped by row just above
        if excluded:
            ex = model.lookup_rows(excluded)
            parts.append(ex[ex >= 0])
        exclude_rows = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        search = lim.ann if model.n_items >= lim.ann_min_items else None
        best, best_scores = model.rank(vector, k, exclude_rows, categories, search)
        ids = model.item_ids
        cold = model.cold_items[best].tolist()
        items = [
            ScoredItem(ids[r], s, REASON_CONTENT if c else REASON_COLLABORATIVE)
            for r, s, c in zip(best.tolist(), best_scores.tolist(), cold, strict=True)
        ]
        return RecommendResult(user_id, items, model.version, degraded, source)

    def _user_vector(
        self,
        model: Model,
        user_id: str,
        history: History,
        live: Mapping[str, float],
        live_rows: np.ndarray,
    ) -> tuple[np.ndarray | None, str]:
        """(vector, source) by ``Model.user_vector``'s rule, from rows already resolved.

        A fold-in of the live weights combined with the training history when any item is
        usable (a user without live state reuses the cached history-only vector), else the
        trained vector of a user the model knows, else None: nothing personal to score with.
        """
        if live:
            live_raw = np.fromiter(live.values(), dtype=np.float64, count=len(live))
            rows, raw = merge_rows(history, live_rows, live_raw, self.limits.history_mode)
            if rows.size:
                return model.recalculate_rows(rows, raw), SOURCE_FOLDIN
        elif history.rows.size:
            vector = self.history_vector(model, user_id, history)
            if vector.size:
                return vector, SOURCE_FOLDIN
        row = model.user_row(user_id)
        if row is None:
            return None, SOURCE_POPULAR
        return np.asarray(model.user_factors[row], dtype=np.float32), SOURCE_MODEL

    def _cold_start(
        self,
        model: Model,
        user_id: str,
        k: int,
        exclude: set[str],
        categories: list[str] | None,
        degraded: bool,
    ) -> RecommendResult:
        """No usable history: trending, then popularity (every exclusion applies to both).

        By id, not by row: the trending list holds items the model has never seen yet.
        """
        items, trend_degraded = self._trending(model, k, exclude, categories)
        source = SOURCE_TRENDING if items else SOURCE_POPULAR
        if len(items) < k:
            taken = exclude | {it.item_id for it in items}
            ids, scores = model.popular(k + len(items), exclude=taken, filter_categories=categories)
            for item, score in zip(ids, scores, strict=True):
                if len(items) >= k:
                    break
                items.append(ScoredItem(item, float(score), REASON_POPULARITY))
        return RecommendResult(user_id, items, model.version, degraded or trend_degraded, source)

    def _trending(
        self, model: Model, k: int, exclude: set[str], categories: list[str] | None
    ) -> tuple[list[ScoredItem], bool]:
        want = k + len(exclude) + self.limits.trending_overfetch
        rows, degraded = self.trending.get(want)
        wanted = {c.lower() for c in categories} if categories else None
        out: list[ScoredItem] = []
        for item, score in rows:
            if item in exclude:
                continue
            if wanted is not None:
                meta = model.items.get(item)
                if meta is None or not wanted.intersection(g.lower() for g in meta.genres):
                    continue
            out.append(ScoredItem(item, float(score), REASON_TRENDING))
            if len(out) >= k:
                break
        return out, degraded

    # -- similar items -----------------------------------------------------------------
    def similar_items(self, query: SimilarQuery) -> SimilarResult:
        lim = self.limits
        item_id = check_id("item_id", query.item_id, lim.max_id_length)
        k = check_k(query.k, lim.max_k)
        model = self.models()
        filters = self._filters(query.filters, model)
        if not model.has_item(item_id):
            raise NotFoundError(f"item {item_id!r} is not in the catalog of model {model.version}")
        exclude = set(filters.exclude_item_ids)
        ids, scores = model.similar_items(
            item_id,
            k + len(exclude),
            filter_categories=list(filters.categories) or None,
        )
        reason = (
            REASON_CONTENT if model.cold_items[model.item_row(item_id)] else (REASON_COLLABORATIVE)
        )
        items = [
            ScoredItem(i, float(s), reason)
            for i, s in zip(ids, scores, strict=True)
            if i not in exclude
        ][:k]
        return SimilarResult(item_id, items, model.version)

    # -- explain -----------------------------------------------------------------------
    def explain(self, user_id: str, item_id: str, k: int = 0) -> ExplainResult:
        lim = self.limits
        check_id("user_id", user_id, lim.max_id_length)
        check_id("item_id", item_id, lim.max_id_length)
        if k < 0:
            raise InvalidArgumentError(f"k must not be negative, got {k}")
        k = check_k(k or lim.default_explain_k, lim.max_k)
        model = self.models()
        if not model.has_item(item_id):
            raise NotFoundError(f"item {item_id!r} is not in the catalog of model {model.version}")
        state, degraded = self.reader.user_state(user_id)
        sentiment: float | None = None
        if self.is_forgotten(user_id, state, degraded):
            weights: dict[str, float] = {}  # an anonymous visitor has no history to explain
        else:
            history = self.history(model, user_id).weights
            weights = combine_weights(history, state.weights, lim.history_mode)
            average, sentiment_degraded = self.reader.sentiment(user_id)
            sentiment = None if average is None else average.avg
            degraded = degraded or sentiment_degraded
        explanation = model.explain(weights, item_id, k)
        return ExplainResult(
            user_id,
            item_id,
            explanation.score,
            list(explanation.contributions),
            model.version,
            degraded,
            sentiment,
        )

    # -- batch -------------------------------------------------------------------------
    def batch(self, widgets: Sequence[Widget]) -> list[WidgetResult]:
        """Each widget succeeds or fails alone; a user's state is read once per batch.

        An over-long ``widget_id`` fails the whole request instead: the id is echoed in
        every answer, including a widget's error, so no per-widget answer can carry it.
        """
        if len(widgets) > self.limits.max_batch:
            raise InvalidArgumentError(
                f"{len(widgets)} widgets in one batch; the maximum is {self.limits.max_batch}"
            )
        limit = self.limits.max_id_length
        for n, widget in enumerate(widgets):
            if len(widget.widget_id) > limit:
                raise InvalidArgumentError(
                    f"widgets[{n}].widget_id is {len(widget.widget_id)} characters long; "
                    f"the maximum is {limit}"
                )
        states: dict[str, tuple[UserState, bool]] = {}
        out: list[WidgetResult] = []
        for widget in widgets:
            try:
                query = widget.query
                if query is None:
                    raise InvalidArgumentError(
                        f"widget {widget.widget_id[:64]!r} names no request "
                        "(set recommend or similar_items)"
                    )
                if isinstance(query, RecommendQuery):
                    check_id("user_id", query.user_id, self.limits.max_id_length)
                    if query.user_id not in states:
                        states[query.user_id] = self.reader.user_state(query.user_id)
                    result: RecommendResult | SimilarResult = self.recommend(
                        query, state=states[query.user_id]
                    )
                else:
                    result = self.similar_items(query)
                out.append(WidgetResult(widget.widget_id, result=result))
            except RecsysError as exc:
                out.append(WidgetResult(widget.widget_id, error=exc))
        return out


def make_filters(
    exclude_item_ids: Iterable[str] = (),
    include_seen: bool = False,
    categories: Iterable[str] = (),
) -> Filters:
    return Filters(tuple(exclude_item_ids), include_seen, tuple(categories))
