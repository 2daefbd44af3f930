"""Event type -> interaction weight: the one mapping the events service and training share.

The events service folds each event's weight into the user's weights hash in Redis; the
recommender trains on those hashes (or on a data set weighed the same way) and folds them in
at request time. A model trained offline and the weights folded in online only agree when
both sides weigh an event the same, so the mapping and its settings live here, once:

- ``EVENT_WEIGHTS`` (default ``view=1,click=2,add_to_cart=4,purchase=8``): a weight for
  each type without a value; every such type must be given.
- ``RATING_WEIGHT_SCALE`` and ``RATING_WEIGHT_OFFSET`` (1 and 0): a rating event weighs
  ``scale * (value - offset)``, the stars by default. Not an event weight (it depends
  on the value), hence settings of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recsys.errors import ConfigError
from recsys.settings import env_float, env_str

if TYPE_CHECKING:
    import numpy as np

#: The event types weighed without a value, in the order the docs list them.
WEIGHTED_TYPES = ("view", "click", "add_to_cart", "purchase")
#: Every event type; ``rating`` weighs its value.
EVENT_TYPES = (*WEIGHTED_TYPES, "rating")
DEFAULT_EVENT_WEIGHTS = "view=1,click=2,add_to_cart=4,purchase=8"


def parse_event_weights(raw: str, name: str = "EVENT_WEIGHTS") -> dict[str, float]:
    """``type=weight`` pairs for the types without a value; every such type must be given."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        kind, sep, value = part.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in WEIGHTED_TYPES:
            raise ConfigError(
                f"{name}: {part!r} is not type=weight with type in {', '.join(WEIGHTED_TYPES)}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"{name}: weight {value!r} of {kind} is not a number") from None
        if not math.isfinite(weight):
            raise ConfigError(f"{name}: weight of {kind} must be finite")
        weights[kind] = weight
    missing = [t for t in WEIGHTED_TYPES if t not in weights]
    if missing:
        raise ConfigError(
            f"{name} lacks a weight for {', '.join(missing)} (default: {DEFAULT_EVENT_WEIGHTS})"
        )
    return weights


def _norm_type(event_type: str) -> str:
    return event_type.strip().lower().replace("-", "_")


@dataclass(frozen=True)
class EventWeights:
    """The raw weight of an event: per type, or ``rating_scale * (value - rating_offset)``."""

    weights: Mapping[str, float] = field(
        default_factory=lambda: parse_event_weights(DEFAULT_EVENT_WEIGHTS)
    )
    rating_scale: float = 1.0
    rating_offset: float = 0.0

    def weight(self, event_type: str, rating: float | None = None) -> float:
        """ValueError for an unknown type, or a rating event without a finite value."""
        kind = _norm_type(event_type)
        if kind == "rating":
            if rating is None or not math.isfinite(rating):
                raise ValueError("a rating event needs a finite rating value")
            return self.rating_weight(rating)
        try:
            return float(self.weights[kind])
        except KeyError:
            raise ValueError(
                f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}"
            ) from None

    def rating_weight(self, value: float) -> float:
        return self.rating_scale * (value - self.rating_offset)

    def rating_weights(self, ratings: np.ndarray) -> np.ndarray:
        """:meth:`rating_weight` of many ratings at once (a data set's whole rating column).

        numpy is imported here, not with the module: the events service weighs one event
        at a time and would otherwise carry numpy (about 9 MB) for nothing.
        """
        import numpy as np

        values = np.asarray(ratings, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("a rating event needs a finite rating value")
        out: np.ndarray = (self.rating_scale * (values - self.rating_offset)).astype(np.float32)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EventWeights:
        """``EVENT_WEIGHTS``, ``RATING_WEIGHT_SCALE`` and ``RATING_WEIGHT_OFFSET``."""
        return cls(
            weights=parse_event_weights(env_str(env, "EVENT_WEIGHTS", DEFAULT_EVENT_WEIGHTS)),
            rating_scale=env_float(env, "RATING_WEIGHT_SCALE", 1.0),
            rating_offset=env_float(env, "RATING_WEIGHT_OFFSET", 0.0),
        )
