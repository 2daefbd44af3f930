"""The Redis key schema, in one place (documented in ``docs/redis-schema.md``).

Every per-user key embeds the hash tag ``{u:<user_id>}`` so that all of one
user's keys land in the same Redis Cluster slot: the events service can update
them in one pipeline/script and the recommender can read them in one round trip.
Global keys (trending, counters) have tags of their own.

The prefix (``REDIS_KEY_PREFIX``, default :data:`DEFAULT_PREFIX`) lets several
deployments or test runs share one Redis without colliding.

Nothing else spells a key, a SCAN pattern or the default prefix, so a change of
the layout is a change here and in the doc; ``scripts/check_key_schema.py``
(``make lint``) fails when a key is built anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_PREFIX = "rs"


@dataclass(frozen=True)
class KeySchema:
    prefix: str = DEFAULT_PREFIX

    def _user(self, user_id: str, kind: str) -> str:
        return f"{self.prefix}:{{u:{user_id}}}:{kind}"

    def _global(self, kind: str) -> str:
        return f"{self.prefix}:{{g}}:{kind}"

    # --- per user, written by the events service ---------------------------------
    def recent(self, user_id: str) -> str:
        """LIST, newest first, capped: JSON {item, type, weight, ts} per interaction."""
        return self._user(user_id, "recent")

    def seen(self, user_id: str) -> str:
        """SET of item ids the user has interacted with."""
        return self._user(user_id, "seen")

    def weights(self, user_id: str) -> str:
        """HASH item id -> accumulated interaction weight (float)."""
        return self._user(user_id, "weights")

    def applied(self, user_id: str) -> str:
        """ZSET event id -> event time: ids already applied (dedup window)."""
        return self._user(user_id, "applied")

    # --- per user, written by the sentiment service ------------------------------
    def suppressed(self, user_id: str) -> str:
        """ZSET item id -> expiry (unix seconds): items the user complained about."""
        return self._user(user_id, "suppressed")

    def sentiment(self, user_id: str) -> str:
        """HASH {avg, ts, n}: time-decayed average sentiment score in [-1, 1]."""
        return self._user(user_id, "sentiment")

    def feedback_applied(self, user_id: str) -> str:
        """ZSET feedback id -> application time: feedback already folded into the
        sentiment average (dedup window, like ``applied`` for events)."""
        return self._user(user_id, "feedback:applied")

    # --- per user, written by `forget_user` ------------------------------------------
    def forgotten(self, user_id: str) -> str:
        """STRING, no TTL: unix time of the user's forget request. While it exists the
        recommender treats the id as anonymous and training leaves it out; it is in the
        user's hash slot so the serving read checks it in the same round trip."""
        return self._user(user_id, "forgotten")

    def user_keys(self, user_id: str) -> list[str]:
        """Every key of a user's data (what `forget user` deletes; dumps). The
        ``forgotten`` record is not data about the user's behaviour and outlives them."""
        return [
            self.recent(user_id),
            self.seen(user_id),
            self.weights(user_id),
            self.applied(user_id),
            self.suppressed(user_id),
            self.sentiment(user_id),
            self.feedback_applied(user_id),
        ]

    # --- global -------------------------------------------------------------------
    def trending(self) -> str:
        """ZSET item id -> log-space decayed score (see docs/redis-schema.md)."""
        return self._global("trending")

    def counters(self) -> str:
        """HASH event type -> count of applied events."""
        return self._global("counters")

    def global_applied(self) -> str:
        """ZSET event id -> application time: ids already counted in trending/counters."""
        return self._global("applied")

    def global_keys(self) -> list[str]:
        return [self.trending(), self.counters(), self.global_applied()]

    # --- SCAN patterns (the prefix's glob characters escaped) ------------------------
    def prefix_pattern(self) -> str:
        """Every key under the prefix (what a test run's teardown deletes)."""
        return f"{_glob_escape(self.prefix)}:*"

    def user_pattern(self) -> str:
        """Every per-user key."""
        return f"{_glob_escape(self.prefix)}:{{u:*"

    def global_pattern(self) -> str:
        """Every global key."""
        return f"{_glob_escape(self.prefix)}:{{g}}:*"

    def weights_pattern(self) -> str:
        """Every user's weights hash (training reads them all)."""
        return self.per_user_pattern(self.weights)

    def forgotten_pattern(self) -> str:
        """Every user's forgotten record (training leaves those users out)."""
        return self.per_user_pattern(self.forgotten)

    def per_user_pattern(self, key_of: Callable[[str], str]) -> str:
        """The glob matching ``key_of(user)`` for every user (``key_of``: a per-user key
        method of this schema, e.g. ``keys.per_user_pattern(keys.seen)``).

        Built from the key method itself, so a SCAN or an ACL key pattern
        (``recsys.store.acl``) follows any change of the layout or the prefix.
        """
        return _glob_escape(key_of("\0")).replace("\0", "*")

    def user_key_patterns(self) -> list[str]:
        """The globs of :meth:`user_keys`, one per kind (what `forget user` may delete)."""
        return [_glob_escape(key).replace("\0", "*") for key in self.user_keys("\0")]

    def literal_pattern(self, key: str) -> str:
        """The glob matching exactly ``key`` (a global key as an ACL key pattern)."""
        return _glob_escape(key)

    def user_of_weights_key(self, key: str) -> str | None:
        """The user whose weights hash ``key`` is (inverts :meth:`weights`); None otherwise."""
        return self._user_of(key, "weights")

    def user_of_forgotten_key(self, key: str) -> str | None:
        """The user whose forgotten record ``key`` is (inverts :meth:`forgotten`)."""
        return self._user_of(key, "forgotten")

    def _user_of(self, key: str, kind: str) -> str | None:
        head, tail = self._user("\0", kind).split("\0")
        if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
            return key[len(head) : len(key) - len(tail)]
        return None


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a SCAN ``MATCH`` glob."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
