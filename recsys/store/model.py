"""Value types exchanged with a :class:`~recsys.store.base.FeatureStore`.

They are plain data so that the pure core of the events service can build them
without importing Redis, and the recommender can read them without knowing how
they are stored.
"""

from __future__ import annotations

import json
import json.encoder
import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from recsys.store.decay import DEFAULT_EPOCH_S


class FeatureEvent(NamedTuple):
    """One validated interaction, ready to be applied (weights already resolved).

    A NamedTuple rather than a frozen dataclass: the events service builds one
    per consumed record, and a tuple is built (and unpacked by the store) at a
    fraction of the cost of a frozen dataclass's ``__init__``.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str  # lower-case short name: view, click, add_to_cart, purchase, rating
    weight: float
    ts: float  # event time, unix seconds

    def recent_entry(self) -> str:
        """The JSON stored in the user's recent list (one shape for every backend)."""
        # Byte for byte what json.dumps({...}, separators=(",", ":"), ensure_ascii=False)
        # gives, at a fraction of its cost (this runs once per event).
        return (
            f'{{"item":{_quote(self.item_id)},"type":{_quote(self.event_type)},'
            f'"weight":{_float_json(self.weight)},"ts":{_float_json(self.ts)}}}'
        )


_quote = json.encoder.encode_basestring


def _float_json(value: float) -> str:
    return repr(value) if math.isfinite(value) else json.dumps(value)


class Interaction(NamedTuple):
    item: str
    type: str
    weight: float
    ts: float

    @classmethod
    def from_json(cls, raw: str | bytes) -> Interaction:
        data = json.loads(raw)
        return cls(str(data["item"]), str(data["type"]), float(data["weight"]), float(data["ts"]))


class UserState(NamedTuple):
    """What the recommender reads at request time, in one round trip."""

    recent: list[Interaction]  # newest first
    seen: set[str]
    weights: dict[str, float]
    suppressed: set[str]  # items currently suppressed (expired ones left out)
    # The user asked to be forgotten (``forget_user``): whatever else is read, the
    # recommender answers as for an anonymous visitor.
    forgotten: bool = False


class Sentiment(NamedTuple):
    avg: float  # time-decayed average in [-1, 1]
    n: float  # decayed number of observations behind it
    ts: float  # time of the newest observation


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """How many events of a batch changed state; the rest were duplicates already applied."""

    user_applied: int
    global_applied: int
    events: int


class PendingApply(Protocol):
    """A batch handed to the store whose outcome is not read yet (see ``begin_apply``)."""

    def result(self) -> ApplyResult:
        """Wait for the writes; raises the store's error when they failed."""
        ...

    def cancel(self) -> None:
        """Give up on the outcome (shutdown); the writes may or may not have happened."""
        ...


@dataclass(frozen=True, slots=True)
class DoneApply:
    """A PendingApply that was complete when it was handed out."""

    value: ApplyResult

    def result(self) -> ApplyResult:
        return self.value

    def cancel(self) -> None:
        pass


@dataclass(frozen=True)
class StoreConfig:
    """Retention and decay parameters shared by every backend.

    ``dedup_window_s`` and the ``dedup_max_*`` caps bound the event-id memory: an
    event redelivered within the window of its first application (and while
    fewer than the cap of newer ids have been applied in its scope) is ignored.
    Kafka redelivers at most the batches after the last committed offset, so the
    defaults are generous.
    """

    recent_cap: int = 50
    user_ttl_s: int = 30 * 86400
    dedup_window_s: int = 7 * 86400
    dedup_max_user: int = 1000
    dedup_max_global: int = 200_000
    trending_half_life_s: float = 6 * 3600.0
    trending_epoch_s: float = DEFAULT_EPOCH_S
    trending_max_items: int = 10_000
