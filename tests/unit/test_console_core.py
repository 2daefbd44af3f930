"""The console's figures from Prometheus text: percentiles, rates, dead-letter recency."""

from __future__ import annotations

import pytest

from recsys.errors import ConfigError
from services.console.auth import authorised
from services.console.config import load_settings, parse_scrape
from services.console.core import (
    DeadLetterMemory,
    Scrape,
    parse_metrics,
    quantile,
    system_view,
    trending_position,
)

EVENTS = """
# TYPE recsys_events_processed_total counter
recsys_events_processed_total{{type="click"}} {processed}
# TYPE recsys_events_consumer_lag gauge
recsys_events_consumer_lag{{topic="clicks",partition="0"}} 3
recsys_events_consumer_lag{{topic="clicks",partition="1"}} 4
# TYPE recsys_events_dead_lettered_total counter
recsys_events_dead_lettered_total{{reason="bad_json"}} {bad}
recsys_events_dead_lettered_total{{reason="unknown_type"}} 1
"""

RECOMMENDER = """
# TYPE recsys_recommender_requests_total counter
recsys_recommender_requests_total{{method="Recommend",code="OK"}} {calls}
# TYPE recsys_recommender_request_seconds histogram
recsys_recommender_request_seconds_bucket{{method="Recommend",le="0.001"}} {fast}
recsys_recommender_request_seconds_bucket{{method="Recommend",le="0.01"}} {calls}
recsys_recommender_request_seconds_bucket{{method="Recommend",le="+Inf"}} {calls}
recsys_recommender_request_seconds_count{{method="Recommend"}} {calls}
recsys_recommender_request_seconds_sum{{method="Recommend"}} 1
# TYPE recsys_recommender_model_info gauge
recsys_recommender_model_info{{version="v2"}} 1
recsys_recommender_model_info{{version="v1"}} 0
# TYPE recsys_recommender_model_reloads_total counter
recsys_recommender_model_reloads_total{{result="ok"}} 1
recsys_recommender_model_reloads_total{{result="failed"}} 0
"""


def scrape(service: str, at: float, text: str) -> Scrape:
    return Scrape(service, at, parse_metrics(text))


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    cumulative = [(0.001, 50.0), (0.01, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, cumulative) == pytest.approx(0.001)
    assert quantile(0.75, cumulative) == pytest.approx(0.001 + 0.009 * 0.5)
    assert quantile(0.99, [(0.001, 0.0), (float("inf"), 0.0)]) is None
    # past the last finite bound: that bound, not infinity
    assert quantile(0.99, [(0.001, 1.0), (float("inf"), 10.0)]) == pytest.approx(0.001)


def test_rates_and_percentiles_are_over_the_interval_between_scrapes() -> None:
    before = {"events": scrape("events", 100.0, EVENTS.format(processed=1000, bad=2)),
              "recommender": scrape("recommender", 100.0,
                                    RECOMMENDER.format(calls=1000, fast=1000))}  # fmt: skip
    # in the last 2 s: 200 events, 100 Recommend calls, all of them slower than 1 ms
    now = {"events": scrape("events", 102.0, EVENTS.format(processed=1200, bad=5)),
           "recommender": scrape("recommender", 102.0,
                                 RECOMMENDER.format(calls=1100, fast=1000))}  # fmt: skip
    memory = DeadLetterMemory()
    system_view(before, {}, memory)
    view = system_view(now, before, memory)
    assert view["events"]["per_s"] == pytest.approx(100.0)
    assert view["events"]["lag_total"] == 7
    assert view["recommender"]["recommend_per_s"] == pytest.approx(50.0)
    # since start p50 would be under 1 ms; over the interval every call took 1-10 ms
    assert view["recommender"]["latency_ms"]["p50"] == pytest.approx(5.5)
    assert [m["version"] for m in view["recommender"]["model_versions"]] == ["v2", "v1"]
    assert view["recommender"]["model_versions"][0]["live"] is True
    # the reason whose count rose comes first, with when it rose
    first = view["dead_letters"][0]
    assert (first["reason"], first["count"], first["rose_at"]) == ("bad_json", 5.0, 102.0)
    assert view["dead_letters"][1]["rose_at"] is None


def test_a_service_that_did_not_answer_is_down_not_an_error() -> None:
    now = {"events": Scrape("events", 1.0, {}, error="URLError: refused")}
    view = system_view(now, {}, DeadLetterMemory())
    assert view["services"]["events"] == {"up": False, "error": "URLError: refused"}
    assert "events" not in view and view["dead_letters"] == []


def test_a_counter_reset_counts_from_zero() -> None:
    before = {"events": scrape("events", 0.0, EVENTS.format(processed=1000, bad=0))}
    now = {"events": scrape("events", 10.0, EVENTS.format(processed=50, bad=0))}
    assert system_view(now, before, DeadLetterMemory())["events"]["per_s"] == 5.0


def test_trending_position() -> None:
    trending = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert trending_position(trending, "b") == 2
    assert trending_position(trending, "z") is None


def test_actions_need_the_exact_bearer_token() -> None:
    assert authorised({"authorization": "Bearer s3cret"}, "s3cret")
    assert authorised({"authorization": "bearer s3cret"}, "s3cret")
    assert not authorised({"authorization": "Bearer s3cre"}, "s3cret")
    assert not authorised({"authorization": "Basic s3cret"}, "s3cret")
    assert not authorised({}, "s3cret")
    # no token configured: no actions, whatever is sent
    assert not authorised({"authorization": "Bearer "}, "")


def test_settings_are_validated_at_start() -> None:
    s = load_settings({})
    assert (s.port, s.metrics_port) == (8090, 9103)
    assert [n for n, _ in s.scrape] == ["events", "recommender", "sentiment"]
    assert parse_scrape("") == ()
    for bad in ("events", "events=ftp://x/metrics", "a=http://h/m,a=http://h/n"):
        with pytest.raises(ConfigError, match="CONSOLE_SCRAPE"):
            parse_scrape(bad)
    with pytest.raises(ConfigError, match="CONSOLE_PORT"):
        load_settings({"CONSOLE_PORT": "99999"})
    with pytest.raises(ConfigError, match="both"):
        load_settings({"CONSOLE_PORT": "9000", "METRICS_PORT": "9000"})
