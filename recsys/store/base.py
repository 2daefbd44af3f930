"""The storage interface the three services share.

The events service writes interactions, the sentiment service writes
suppressions and sentiment, the recommender reads a user's state and the
trending list. Two implementations: :class:`~recsys.store.redis_store.RedisFeatureStore`
(production) and :class:`~recsys.store.memory.InMemoryFeatureStore` (unit tests),
both held to the same behaviour suite (``tests/unit/test_store_behaviour.py``).

A backend's own errors never leave it: when the server cannot be reached or
refuses a command, a Redis-backed store raises :class:`StoreUnavailableError`,
so the services handle an outage without importing the client library; when its
ACL user may not run a command (or cannot log in) it raises
:class:`StorePermissionError`, which no retry can cure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from recsys.errors import PermissionDeniedError, UnavailableError
from recsys.store.model import (
    ApplyResult,
    FeatureEvent,
    PendingApply,
    Sentiment,
    StoreConfig,
    UserState,
)


class StoreUnavailableError(UnavailableError):
    """The store did not do what was asked (down, timed out, refused the command).

    Retrying later is the remedy: every write is idempotent, so a caller that
    got this from ``apply_events`` or ``PendingApply.result()`` replays the batch.
    The client library's exception is kept as ``__cause__`` for the logs.
    """


class StorePermissionError(PermissionDeniedError):
    """Redis refused the command or its keys for the store's ACL user, or its login.

    Not a StoreUnavailableError: the same call fails the same way until the ACL
    (``recsys redis-acl``) or the credentials in ``REDIS_URL`` change, so the
    consume loop stops on it rather than retrying. The message names the user and
    the denied command; the client library's exception is ``__cause__``.
    """


@runtime_checkable
class FeatureStore(Protocol):
    config: StoreConfig

    def apply_events(self, events: Sequence[FeatureEvent], now: float | None = None) -> ApplyResult:
        """Apply a batch idempotently: events whose id was already applied change nothing.

        Per-user updates and global (trending, counters) updates are each
        deduplicated on their own, so a crash between the two is repaired by
        replaying the batch. Events of one user are applied in sequence order.
        """
        ...

    def begin_apply(self, events: Sequence[FeatureEvent], now: float | None = None) -> PendingApply:
        """Start ``apply_events`` without waiting for it; ``result()`` completes it.

        Lets the events service poll its next batch while the store works. Until
        ``result()`` returns, nothing about the batch is known to be applied.
        """
        ...

    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        """Everything the events service keeps about the user, and whether the user was
        forgotten, in one round trip."""
        ...

    def get_serving_state(self, user_id: str, now: float | None = None) -> UserState:
        """:meth:`get_user_state` without ``recent`` (left empty), in one round trip.

        What a recommendation folds in and filters by (weights, seen, suppressed, and
        the forgotten flag, which overrides the rest). It runs on every Recommend
        request, so it skips the recent list: decoding up to ``recent_cap`` JSON entries
        per request is the larger part of the read.
        """
        ...

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """Top ``n`` items by decayed score at ``now`` (highest first)."""
        ...

    def counters(self) -> dict[str, int]:
        """Applied events per event type since the store was created."""
        ...

    def forget_user(self, user_id: str, now: float | None = None) -> int:
        """A privacy request: record the user as forgotten (at ``now``), take the user's
        event ids out of the global dedup memory, and delete every key of the user's
        data; returns how many data keys existed.

        The record comes first, so a reader that races the deletion already answers as
        for an anonymous user; it never expires, because training data sets and model
        artifacts outlive the Redis keys (docs/redis-schema.md, "Forgetting a user").
        Running it again is harmless (the record's time moves to the later request).
        """
        ...

    def forgotten_users(self) -> dict[str, float]:
        """Every forgotten user id and the time of its (latest) forget request: what
        training leaves out."""
        ...

    def suppress(self, user_id: str, item_id: str, ttl_s: float, now: float | None = None) -> None:
        """Hide ``item_id`` from the user's recommendations for ``ttl_s`` seconds."""
        ...

    def unsuppress(self, user_id: str, item_id: str, now: float | None = None) -> bool:
        """Lift the user's suppression of ``item_id`` (positive feedback about it, or
        support staff); True when a suppression was still in force at ``now``.
        Idempotent, so a replayed feedback record changes nothing more."""
        ...

    def update_sentiment(
        self,
        user_id: str,
        score: float,
        ts: float,
        half_life_s: float,
        feedback_id: str | None = None,
        now: float | None = None,
    ) -> Sentiment | None:
        """Fold one scored feedback into the user's decayed average; returns the new
        average, or None when ``feedback_id`` was folded in already (a replay after a
        crash must not count the same feedback twice). Ids are remembered for the
        store's dedup window, like event ids."""
        ...

    def get_sentiment(self, user_id: str) -> Sentiment | None: ...

    def ping(self) -> bool:
        """True when the store answers; an outage raises :class:`StoreUnavailableError`
        (callers that only want a flag, such as health checks, catch it)."""
        ...

    def close(self) -> None: ...
