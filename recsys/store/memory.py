"""In-process FeatureStore for unit tests and examples; same semantics as Redis.

Not thread-safe and without TTL expiry (time does not pass in unit tests).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from typing import Any

from recsys.store.decay import decay_rate, decayed_score, log_increment, logaddexp, sentiment_update
from recsys.store.model import (
    ApplyResult,
    DoneApply,
    FeatureEvent,
    Interaction,
    Sentiment,
    StoreConfig,
    UserState,
)


class _Applied:
    """Event-id memory with the same window and cap rules as the Redis ZSETs."""

    def __init__(self) -> None:
        self.ids: dict[str, float] = {}

    def seen(self, event_id: str) -> bool:
        return event_id in self.ids

    def add(self, event_id: str, now: float) -> None:
        self.ids[event_id] = now

    def trim(self, now: float, window_s: float, cap: int) -> None:
        cutoff = now - window_s
        self.ids = {k: v for k, v in self.ids.items() if v >= cutoff}
        if len(self.ids) > cap:
            ordered = sorted(self.ids.items(), key=lambda kv: (kv[1], kv[0]))
            self.ids = dict(ordered[len(ordered) - cap :])


class InMemoryFeatureStore:
    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()
        self._rate = decay_rate(self.config.trending_half_life_s)
        self._recent: dict[str, list[Interaction]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._weights: dict[str, dict[str, float]] = defaultdict(dict)
        self._applied: dict[str, _Applied] = defaultdict(_Applied)
        self._suppressed: dict[str, dict[str, float]] = defaultdict(dict)
        self._sentiment: dict[str, Sentiment] = {}
        self._feedback_applied: dict[str, _Applied] = defaultdict(_Applied)
        self._trending: dict[str, float] = {}
        self._counters: dict[str, int] = defaultdict(int)
        self._global_applied = _Applied()
        self._forgotten: dict[str, float] = {}
        self.round_trips = 0

    def apply_events(self, events: Sequence[FeatureEvent], now: float | None = None) -> ApplyResult:
        now = time.time() if now is None else now
        cfg = self.config
        user_applied = 0
        touched: set[str] = set()
        for ev in events:
            applied = self._applied[ev.user_id]
            if applied.seen(ev.event_id):
                continue
            applied.add(ev.event_id, now)
            self._recent[ev.user_id].insert(
                0, Interaction(ev.item_id, ev.event_type, ev.weight, ev.ts)
            )
            self._seen[ev.user_id].add(ev.item_id)
            weights = self._weights[ev.user_id]
            weights[ev.item_id] = weights.get(ev.item_id, 0.0) + ev.weight
            user_applied += 1
            touched.add(ev.user_id)
        for user_id in touched:
            del self._recent[user_id][cfg.recent_cap :]
            self._applied[user_id].trim(now, cfg.dedup_window_s, cfg.dedup_max_user)
        global_applied = 0
        for ev in events:
            if self._global_applied.seen(ev.event_id):
                continue
            self._global_applied.add(ev.event_id, now)
            self._counters[ev.event_type] += 1
            if ev.weight > 0:
                inc = log_increment(ev.weight, ev.ts, self._rate, cfg.trending_epoch_s)
                old = self._trending.get(ev.item_id)
                self._trending[ev.item_id] = inc if old is None else logaddexp(old, inc)
            global_applied += 1
        if global_applied:
            self._global_applied.trim(now, cfg.dedup_window_s, cfg.dedup_max_global)
            if len(self._trending) > cfg.trending_max_items:
                ordered = sorted(self._trending.items(), key=lambda kv: (kv[1], kv[0]))
                self._trending = dict(ordered[len(ordered) - cfg.trending_max_items :])
        self.round_trips += 1
        return ApplyResult(user_applied, global_applied, len(events))

    def begin_apply(self, events: Sequence[FeatureEvent], now: float | None = None) -> DoneApply:
        return DoneApply(self.apply_events(events, now))

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        now = time.time() if now is None else now
        self.round_trips += 1
        return UserState(
            recent=list(self._recent.get(user_id, [])),
            seen=set(self._seen.get(user_id, set())),
            weights=dict(self._weights.get(user_id, {})),
            suppressed={i for i, exp in self._suppressed.get(user_id, {}).items() if exp > now},
            forgotten=user_id in self._forgotten,
        )

    def get_serving_state(self, user_id: str, now: float | None = None) -> UserState:
        # Through get_user_state, so a test double that overrides only that (to count or
        # to fail reads) sees the recommender's reads too.
        return self.get_user_state(user_id, now)._replace(recent=[])

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        now = time.time() if now is None else now
        self.round_trips += 1
        ordered = sorted(self._trending.items(), key=lambda kv: (-kv[1], kv[0]))[: max(n, 0)]
        cfg = self.config
        return [
            (item, decayed_score(s, now, self._rate, cfg.trending_epoch_s)) for item, s in ordered
        ]

    def trending_log_scores(self) -> dict[str, float]:
        return dict(self._trending)

    def counters(self) -> dict[str, int]:
        self.round_trips += 1
        return dict(self._counters)

    def forget_user(self, user_id: str, now: float | None = None) -> int:
        self.round_trips += 1
        self._forgotten[user_id] = time.time() if now is None else now
        applied = self._applied.get(user_id)
        if applied is not None:
            for event_id in applied.ids:
                self._global_applied.ids.pop(event_id, None)
        found = 0
        tables: list[MutableMapping[str, Any]] = [
            self._recent, self._seen, self._weights, self._applied, self._suppressed,
            self._sentiment, self._feedback_applied,
        ]  # fmt: skip
        for table in tables:
            if table.pop(user_id, None) is not None:
                found += 1
        return found

    def forgotten_users(self) -> dict[str, float]:
        self.round_trips += 1
        return dict(self._forgotten)

    def unsuppress(self, user_id: str, item_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        self.round_trips += 1
        table = self._suppressed.get(user_id)
        expiry = None if table is None else table.pop(item_id, None)
        return expiry is not None and expiry > now

    def suppress(self, user_id: str, item_id: str, ttl_s: float, now: float | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = time.time() if now is None else now
        self.round_trips += 1
        table = self._suppressed[user_id]
        table[item_id] = max(table.get(item_id, 0.0), now + ttl_s)
        for item in [i for i, exp in table.items() if exp <= now]:
            del table[item]

    def update_sentiment(
        self,
        user_id: str,
        score: float,
        ts: float,
        half_life_s: float,
        feedback_id: str | None = None,
        now: float | None = None,
    ) -> Sentiment | None:
        if not -1.0 <= score <= 1.0:
            raise ValueError("sentiment score must be in [-1, 1]")
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self.round_trips += 1
        if feedback_id:
            now = time.time() if now is None else now
            applied = self._feedback_applied[user_id]
            if applied.seen(feedback_id):
                return None
            applied.add(feedback_id, now)
            applied.trim(now, self.config.dedup_window_s, self.config.dedup_max_user)
        prev = self._sentiment.get(user_id)
        prev_t = (prev.avg, prev.n, prev.ts) if prev else None
        result = Sentiment(*sentiment_update(prev_t, score, ts, half_life_s))
        self._sentiment[user_id] = result
        return result

    def get_sentiment(self, user_id: str) -> Sentiment | None:
        self.round_trips += 1
        return self._sentiment.get(user_id)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass
