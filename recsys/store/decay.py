"""Time-decay math shared by the store backends (and mirrored in the Lua scripts).

Trending keeps, per item, ``s = ln(sum_j w_j * exp(lam * (t_j - t0)))`` with
``lam = ln 2 / half_life`` and a fixed epoch ``t0``. Adding an event is a
``logaddexp``; the decayed score at time ``now`` is ``exp(s - lam * (now - t0))``.
Because the subtraction is the same for every item, ranking by ``s`` equals
ranking by the decayed score at any time, so the sorted set never has to be
rewritten as time passes, and the numbers stay finite (a year at a one-hour
half-life is only ~6000 in log space).
"""

from __future__ import annotations

import math

DEFAULT_EPOCH_S = 946_684_800.0  # 2000-01-01T00:00:00Z: no valid event is older


def decay_rate(half_life_s: float) -> float:
    if half_life_s <= 0:
        raise ValueError("half-life must be positive")
    return math.log(2.0) / half_life_s


def log_increment(weight: float, ts: float, rate: float, epoch_s: float) -> float:
    """ln(weight * exp(rate * (ts - epoch))) for a positive weight."""
    return math.log(weight) + rate * (ts - epoch_s)


def logaddexp(a: float, b: float) -> float:
    """ln(exp(a) + exp(b)) without overflow; the same formula the Lua script uses."""
    m = a if a > b else b
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def decayed_score(log_score: float, now: float, rate: float, epoch_s: float) -> float:
    """The trending score at ``now``: sum of weights, each halved every half-life."""
    return math.exp(log_score - rate * (now - epoch_s))


def sentiment_update(
    prev: tuple[float, float, float] | None, score: float, ts: float, half_life_s: float
) -> tuple[float, float, float]:
    """Fold one observation into a time-decayed average; returns (avg, n, ts).

    Older observations weigh ``2^(-age/half_life)``; an observation older than
    the newest one (out of order) is itself decayed instead, so the result does
    not depend on arrival order beyond float rounding.
    """
    if prev is None:
        return score, 1.0, ts
    avg, n, prev_ts = prev
    if ts >= prev_ts:
        d = 2.0 ** (-(ts - prev_ts) / half_life_s)
        new_n = n * d + 1.0
        return (avg * n * d + score) / new_n, new_n, ts
    d = 2.0 ** (-(prev_ts - ts) / half_life_s)
    new_n = n + d
    return (avg * n + score * d) / new_n, new_n, prev_ts
