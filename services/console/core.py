"""What the console's system page shows, derived from the services' own Prometheus metrics.

Pure: the text of each ``/metrics`` endpoint goes in (parsed by prometheus_client's own
parser), figures come out. Rates and latency percentiles are over the interval between two
scrapes, as Prometheus' ``rate()`` and ``histogram_quantile()`` compute them, so the page
shows the present, not the average since each service started; with one scrape only, the
percentiles are over everything since start. Nothing is counted twice: the console keeps
only the previous scrape and, per dead-letter reason, when its count last rose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: (metric name with suffix, sorted label pairs) → value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Scrape:
    """One service's metrics at one time (``samples`` empty and ``error`` set when down)."""

    service: str
    at: float
    samples: Samples
    error: str = ""


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def select(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in samples.items() if n == name and want <= set(lab)}


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(select(samples, name, **labels).values())


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets (upper bound, count), summed over other labels."""
    acc: dict[float, float] = {}
    for lab, value in select(samples, f"{name}_bucket", **labels).items():
        le = float(dict(lab)["le"])
        acc[le] = acc.get(le, 0.0) + value
    return sorted(acc.items())


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: linear within the bucket that holds the q-th observation;
    None without observations. The last finite bound stands in for +Inf, as Prometheus
    does."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_delta(now: list[tuple[float, float]], before: list[tuple[float, float]]
                 ) -> list[tuple[float, float]]:  # fmt: skip
    """The interval's buckets; a counter that went down (a restart) counts from zero."""
    old = dict(before)
    if any(count < old.get(le, 0.0) for le, count in now):
        return now
    return [(le, count - old.get(le, 0.0)) for le, count in now]


def rate(now: float, before: float | None, seconds: float) -> float | None:
    if before is None or seconds <= 0:
        return None
    delta = now - before if now >= before else now  # a reset: the new process' count
    return delta / seconds


@dataclass
class DeadLetterMemory:
    """Per (service, reason): the count last seen and when it last rose."""

    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    rose_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def update(self, key: tuple[str, str], count: float, at: float) -> None:
        previous = self.seen.get(key)
        if previous is not None and count > previous:
            self.rose_at[key] = at
        self.seen[key] = count


DEAD_LETTER_METRICS = {
    "events": "recsys_events_dead_lettered_total",
    "sentiment": "recsys_sentiment_dead_lettered_total",
}


def percentiles_ms(now: Samples, before: Samples | None, name: str,
                   **labels: str) -> dict[str, float | None]:  # fmt: skip
    current = buckets(now, name, **labels)
    window = bucket_delta(current, buckets(before, name, **labels)) if before else current
    if not window or window[-1][1] <= 0:
        window = current  # nothing in the interval: since start
    out: dict[str, float | None] = {}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = quantile(q, window)
        out[label] = None if value is None else round(value * 1000, 3)
    return out


def system_view(now: Mapping[str, Scrape], before: Mapping[str, Scrape],
                memory: DeadLetterMemory) -> dict[str, Any]:  # fmt: skip
    """The system page's figures from the latest scrape of each service and the one before."""
    view: dict[str, Any] = {"services": {}, "at": max((s.at for s in now.values()), default=0)}
    for name, scrape in now.items():
        view["services"][name] = {"up": not scrape.error, "error": scrape.error}

    def pair(service: str) -> tuple[Samples | None, Samples | None, float]:
        cur = now.get(service)
        if cur is None or cur.error:
            return None, None, 0.0
        prev = before.get(service)
        if prev is None or prev.error:
            return cur.samples, None, 0.0
        return cur.samples, prev.samples, cur.at - prev.at

    events, events_prev, dt = pair("events")
    if events is not None:
        processed = total(events, "recsys_events_processed_total")
        lags = {
            f"{dict(lab).get('topic', '')}[{dict(lab).get('partition', '')}]": v
            for lab, v in select(events, "recsys_events_consumer_lag").items()
        }
        view["events"] = {
            "processed": processed,
            "per_s": rate(
                processed,
                total(events_prev, "recsys_events_processed_total") if events_prev else None,
                dt,
            ),
            "lag_total": sum(lags.values()),
            "lag": lags,
            # event to Redis: a polled batch's time until its offsets are committed
            "batch_ms": percentiles_ms(events, events_prev, "recsys_events_batch_seconds"),
            "degraded": total(events, "recsys_events_degraded") > 0,
        }
    rec, rec_prev, dt = pair("recommender")
    if rec is not None:
        name = "recsys_recommender_requests_total"
        calls = total(rec, name, method="Recommend")
        versions = select(rec, "recsys_recommender_model_info")
        view["recommender"] = {
            "recommend_per_s": rate(
                calls, total(rec_prev, name, method="Recommend") if rec_prev else None, dt
            ),
            "latency_ms": percentiles_ms(
                rec, rec_prev, "recsys_recommender_request_seconds", method="Recommend"
            ),
            "http_latency_ms": percentiles_ms(
                rec, rec_prev, "recsys_recommender_http_request_seconds", method="Recommend"
            ),
            "model_versions": sorted(
                ({"version": dict(lab)["version"], "live": v > 0} for lab, v in versions.items()),
                key=lambda v: (not v["live"], v["version"]),
            ),
            "reloads_ok": total(rec, "recsys_recommender_model_reloads_total", result="ok"),
            "reloads_failed": total(rec, "recsys_recommender_model_reloads_total", result="failed"),
            "redis_up": total(rec, "recsys_recommender_redis_up") > 0,
            "model_items": total(rec, "recsys_recommender_model_items"),
        }
    letters: list[dict[str, Any]] = []
    for service, metric in DEAD_LETTER_METRICS.items():
        cur = now.get(service)
        if cur is None or cur.error:
            continue
        for lab, count in select(cur.samples, metric).items():
            reason = dict(lab).get("reason", "")
            memory.update((service, reason), count, cur.at)
            letters.append({"service": service, "reason": reason, "count": count,
                            "rose_at": memory.rose_at.get((service, reason))})  # fmt: skip
    letters.sort(key=lambda d: (-(d["rose_at"] or 0), -d["count"], d["service"], d["reason"]))
    view["dead_letters"] = letters
    return view


def trending_position(trending: Iterable[tuple[str, float]], item_id: str) -> int | None:
    """1-based rank of ``item_id`` among the trending items read, None when not among them."""
    for rank, (item, _score) in enumerate(trending, start=1):
        if item == item_id:
            return rank
    return None
