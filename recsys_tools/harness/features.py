"""The features the events service must have written, computed independently, and a
Redis dump in comparable form: the oracle of the events integration tests and the fault suite.

The computation is plain Python over the records produced (docs/events.md gives the
rules), no code of the service; the driver configures the service with the same
``RECENT_CAP`` and ``TRENDING_HALF_LIFE_S`` as here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

#: the trending score's time origin, 2000-01-01 UTC (docs/redis-schema.md)
EPOCH = 946_684_800.0
#: ``RECENT_CAP`` the events service is started with
RECENT_CAP = 20
#: ``TRENDING_HALF_LIFE_S`` the events service is started with
HALF_LIFE = 3600.0


# ------------------------------------------------------------------ expected features
def expected_event_features(events: list[Any], prefix: str,
                            rating_scale: float = 1.0,
                            rating_offset: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """The events service's Redis features, computed here with plain Python (docs/events.md)."""
    from recsys.events.v1 import events_pb2
    from recsys.store import KeySchema

    weights_of = {events_pb2.EVENT_TYPE_VIEW: ("view", 1.0), events_pb2.EVENT_TYPE_CLICK:
                  ("click", 2.0), events_pb2.EVENT_TYPE_ADD_TO_CART: ("add_to_cart", 4.0),
                  events_pb2.EVENT_TYPE_PURCHASE: ("purchase", 8.0)}  # fmt: skip
    keys = KeySchema(prefix)
    recent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    weights: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counters: dict[str, int] = defaultdict(int)
    trend: dict[str, list[float]] = defaultdict(list)
    seen: set[str] = set()
    lam = math.log(2) / HALF_LIFE
    for ev in events:
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if ev.event_type == events_pb2.EVENT_TYPE_RATING:
            kind, w = "rating", rating_scale * (ev.value - rating_offset)
        else:
            kind, w = weights_of[ev.event_type]
        ts = ev.event_time.seconds + ev.event_time.nanos / 1e9
        recent[ev.user_id].append({"item": ev.item_id, "type": kind, "weight": w, "ts": ts})
        weights[ev.user_id][ev.item_id] += w
        counters[kind] += 1
        if w > 0:
            trend[ev.item_id].append(math.log(w) + lam * (ts - EPOCH))
    out: dict[str, Any] = {}
    for user, rows in recent.items():
        out[keys.recent(user)] = list(reversed(rows))[:RECENT_CAP]
        out[keys.seen(user)] = sorted({r["item"] for r in rows})
        out[keys.weights(user)] = dict(weights[user])
    out[keys.counters()] = dict(counters)
    trending = {}
    for item, terms in trend.items():
        m = max(terms)
        trending[item] = m + math.log(math.fsum(math.exp(t - m) for t in terms))
    out[keys.trending()] = trending
    return out


def normalised_dump(client: Any, prefix: str) -> dict[str, Any]:
    """Redis features under ``prefix`` in comparable form, keys renamed to ``<prefix>`` → ``P``.

    Time-dependent values are reduced to what two runs must share: a suppression set to
    its members (its scores are expiry times), a sentiment hash to its (avg, n) pair.
    """
    import json

    from recsys.store import KeySchema
    from recsys.store.redis_store import dump_features

    keys = KeySchema(prefix)
    out: dict[str, Any] = {}
    for key, value in dump_features(client, keys).items():
        if key.endswith(":recent"):
            v: Any = [json.loads(x) for x in value]
        elif key.endswith(":weights"):
            v = {k: float(x) for k, x in value.items()}
        elif key == keys.counters():
            v = {k: int(x) for k, x in value.items()}
        elif key.endswith(":suppressed"):
            v = sorted(value)
        elif key.endswith(":sentiment"):
            v = {"avg": float(value.get("avg", "nan")), "n": float(value.get("n", "nan"))}
        else:
            v = value
        out["P" + key[len(prefix) :]] = v
    return out


def compare_features(actual: dict[str, Any], expected: dict[str, Any],
                     rel: float = 1e-9) -> list[str]:  # fmt: skip
    """Differences between two normalised dumps (empty when equal within float rounding)."""
    diffs: list[str] = []
    for key in sorted(set(actual) ^ set(expected)):
        diffs.append(f"{key}: only in {'actual' if key in actual else 'expected'}")
    for key in sorted(set(actual) & set(expected)):
        a, e = actual[key], expected[key]
        if not _close(a, e, rel):
            diffs.append(f"{key}: {str(a)[:120]} != {str(e)[:120]}")
    return diffs


def _close(a: Any, e: Any, rel: float) -> bool:
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(_close(a[k], e[k], rel) for k in a)
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(_close(x, y, rel) for x, y in zip(a, e, strict=True))
    if isinstance(a, float) or isinstance(e, float):
        try:
            return math.isclose(float(a), float(e), rel_tol=rel, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return bool(a == e)
