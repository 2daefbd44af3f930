"""``recsys replay``: MovieLens-100K ratings as click events, in timestamp order.

Mapping (documented in docs/events.md):

- ``--mapping rating`` (default): every rating becomes ``EVENT_TYPE_RATING`` with
  ``value`` = the stars (1-5); the events service turns it into a weight with
  ``RATING_WEIGHT_SCALE * (value - RATING_WEIGHT_OFFSET)``.
- ``--mapping implicit``: 5 stars -> purchase, 4 -> add_to_cart, 3 -> click,
  1-2 -> view (weights then come from ``EVENT_WEIGHTS``).

Ids: ``event_id`` = ``ml100k-<user>-<item>-<timestamp>`` (stable, so replaying
twice applies nothing new), record key = user id (per-user order).
Times: MovieLens stamps are from 1997-98, which the service rejects as too old,
so they are shifted: as fast as possible, the last rating lands at ``anchor``
(default: now) and the original spacing is kept; with ``--speedup S`` a rating
``d`` seconds after the first is sent ``d/S`` seconds after the start and
stamped with that send time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.events.v1 import events_pb2
from recsys.kafka_codec import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, encode

MAPPINGS = ("rating", "implicit")
_IMPLICIT = {
    5: events_pb2.EVENT_TYPE_PURCHASE,
    4: events_pb2.EVENT_TYPE_ADD_TO_CART,
    3: events_pb2.EVENT_TYPE_CLICK,
    2: events_pb2.EVENT_TYPE_VIEW,
    1: events_pb2.EVENT_TYPE_VIEW,
}


@dataclass(frozen=True, slots=True)
class Rating:
    user_id: str
    item_id: str
    rating: float
    timestamp: int


def ratings_from_interactions(interactions: Any, limit: int | None = None) -> list[Rating]:
    """Rows of ``recsys_tools.data.movielens.Interactions`` (already in time order)."""
    n = len(interactions) if limit is None else min(limit, len(interactions))
    return [
        Rating(
            str(interactions.user_ids[i]),
            str(interactions.item_ids[i]),
            float(interactions.ratings[i]),
            int(interactions.timestamps[i]),
        )
        for i in range(n)
    ]


def to_event(r: Rating, event_time: float, mapping: str = "rating") -> events_pb2.ClickEvent:
    ev = events_pb2.ClickEvent(
        event_id=f"ml100k-{r.user_id}-{r.item_id}-{r.timestamp}",
        user_id=r.user_id,
        item_id=r.item_id,
        session_id=f"ml100k-{r.user_id}",
    )
    if mapping == "rating":
        ev.event_type = events_pb2.EVENT_TYPE_RATING
        ev.value = r.rating
    elif mapping == "implicit":
        ev.event_type = _IMPLICIT[max(1, min(5, round(r.rating)))]
    else:
        raise ValueError(f"unknown mapping {mapping!r}; use one of {', '.join(MAPPINGS)}")
    stamp = Timestamp()
    stamp.FromNanoseconds(round(event_time * 1e9))
    ev.event_time.CopyFrom(stamp)
    return ev


def fast_events(
    ratings: list[Rating], anchor: float, mapping: str = "rating"
) -> Iterator[events_pb2.ClickEvent]:
    """As fast as possible: original spacing, the last rating at ``anchor``."""
    if not ratings:
        return
    shift = anchor - ratings[-1].timestamp
    for r in ratings:
        yield to_event(r, r.timestamp + shift, mapping)


def replay(
    producer: Any,
    topic: str,
    ratings: list[Rating],
    *,
    speedup: float | None = None,
    anchor: float | None = None,
    mapping: str = "rating",
    content_type: str = CONTENT_TYPE_PROTOBUF,
    progress: bool = True,
    sleep: Any = time.sleep,
    clock: Any = time.time,
) -> int:
    """Produce the ratings as click events; returns how many were sent (and acknowledged)."""
    from tqdm import tqdm

    if content_type not in (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON):
        raise ValueError(f"unsupported content type {content_type!r}")
    start = clock()
    futures = []
    with tqdm(
        total=len(ratings), unit="ev", desc=f"replay -> {topic}", disable=not progress
    ) as bar:
        if speedup is None:
            events: Iterator[events_pb2.ClickEvent] = fast_events(
                ratings, start if anchor is None else anchor, mapping
            )
            for ev in events:
                value, headers = encode(ev, content_type)
                futures.append(
                    producer.send(
                        topic, key=ev.user_id.encode(), value=value, headers=list(headers)
                    )
                )
                bar.update(1)
        else:
            if speedup <= 0:
                raise ValueError("speedup must be positive")
            t0 = ratings[0].timestamp if ratings else 0
            for r in ratings:
                due = start + (r.timestamp - t0) / speedup
                wait = due - clock()
                if wait > 0:
                    producer.flush()
                    sleep(wait)
                ev = to_event(r, due, mapping)
                value, headers = encode(ev, content_type)
                futures.append(
                    producer.send(
                        topic, key=ev.user_id.encode(), value=value, headers=list(headers)
                    )
                )
                bar.update(1)
        producer.flush()
    for future in futures:
        future.get(timeout=30)
    return len(futures)
