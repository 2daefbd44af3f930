"""``recsys replay``: MovieLens-100K ratings, or any log ``recsys import`` wrote, as click
events in timestamp order.

Mapping (documented in docs/events.md):

- ``--mapping rating`` (default): every rating becomes ``EVENT_TYPE_RATING`` with
  ``value`` = the stars (1-5); the events service turns it into a weight with
  ``RATING_WEIGHT_SCALE * (value - RATING_WEIGHT_OFFSET)``.
- ``--mapping implicit``: 5 stars -> purchase, 4 -> add_to_cart, 3 -> click,
  1-2 -> view (weights then come from ``EVENT_WEIGHTS``).

- ``--mapping log`` (an imported log, ``recsys replay --log FILE``): each row's event type
  by name (view, click, add_to_cart, purchase); a click where the log has no event column
  (a weight column is not carried: the events service weighs events by type).

Ids: ``event_id`` = ``ml100k-<user>-<item>-<timestamp>`` (for a log: ``<source>-<row>``,
the row number in the file, since one user may touch one item twice in a second); stable, so
replaying twice applies nothing new; record key = user id (per-user order).
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

MAPPINGS = ("rating", "implicit", "log")
_BY_NAME = {
    "view": events_pb2.EVENT_TYPE_VIEW,
    "click": events_pb2.EVENT_TYPE_CLICK,
    "add_to_cart": events_pb2.EVENT_TYPE_ADD_TO_CART,
    "purchase": events_pb2.EVENT_TYPE_PURCHASE,
}
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
    # An imported log's rows (mapping ``log``): the event type's name, and the row number
    # that makes the event id unique even for two rows of one user, item and second.
    event: str = ""
    seq: int | None = None


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


def ratings_from_log(
    users: list[str], items: list[str], times: list[float], events: list[str] | None
) -> list[Rating]:
    """An imported log's rows (``recsys import``) in time order, ties in file order, for the
    ``log`` mapping: each row's event type by name (view, click, add_to_cart, purchase), a
    click where the log has no event column."""
    order = sorted(range(len(users)), key=lambda j: (times[j], j))
    return [
        Rating(users[j], items[j], 0.0, int(times[j]), events[j] if events else "click", j)
        for j in order
    ]


def to_event(
    r: Rating, event_time: float, mapping: str = "rating", source: str = "ml100k"
) -> events_pb2.ClickEvent:
    event_id = (
        f"{source}-{r.user_id}-{r.item_id}-{r.timestamp}" if r.seq is None else f"{source}-{r.seq}"
    )
    ev = events_pb2.ClickEvent(
        event_id=event_id,
        user_id=r.user_id,
        item_id=r.item_id,
        session_id=f"{source}-{r.user_id}",
    )
    if mapping == "rating":
        ev.event_type = events_pb2.EVENT_TYPE_RATING
        ev.value = r.rating
    elif mapping == "implicit":
        ev.event_type = _IMPLICIT[max(1, min(5, round(r.rating)))]
    elif mapping == "log":
        if r.event not in _BY_NAME:
            raise ValueError(f"event type {r.event!r} is not one of {', '.join(_BY_NAME)}")
        ev.event_type = _BY_NAME[r.event]
    else:
        raise ValueError(f"unknown mapping {mapping!r}; use one of {', '.join(MAPPINGS)}")
    stamp = Timestamp()
    stamp.FromNanoseconds(round(event_time * 1e9))
    ev.event_time.CopyFrom(stamp)
    return ev


def fast_events(
    ratings: list[Rating], anchor: float, mapping: str = "rating", source: str = "ml100k"
) -> Iterator[events_pb2.ClickEvent]:
    """As fast as possible: original spacing, the last rating at ``anchor``."""
    if not ratings:
        return
    shift = anchor - ratings[-1].timestamp
    for r in ratings:
        yield to_event(r, r.timestamp + shift, mapping, source)


def replay(
    producer: Any,
    topic: str,
    ratings: list[Rating],
    *,
    speedup: float | None = None,
    anchor: float | None = None,
    mapping: str = "rating",
    source: str = "ml100k",
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
                ratings, start if anchor is None else anchor, mapping, source
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
                ev = to_event(r, due, mapping, source)
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
