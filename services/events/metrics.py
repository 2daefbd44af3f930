"""Prometheus metrics of the events service (exported on METRICS_PORT).

The series whose labels are known in advance (event types, dead-letter reasons) are
created at import, at zero (the end of this module): a counter that first appears on its
first increment is invisible to ``absent()`` alerts and dashboards until then. The consume
loop (``recsys.consume``) does the same for the dependencies and restart reasons it knows,
and creates a partition's lag series when the partition is assigned.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.events.core import EVENT_TYPE_NAMES, REASON_CODES

PROCESSED = Counter(
    "recsys_events_processed_total",
    "Valid click events handed to the feature store (redeliveries included), by type.",
    ["type"],
)
DUPLICATES = Counter(
    "recsys_events_duplicates_total",
    "Redelivered events whose id had already been applied (ignored).",
)
DEAD_LETTERED = Counter(
    "recsys_events_dead_lettered_total",
    "Records sent to the dead-letter topic, by reason code.",
    ["reason"],
)
BATCH_SECONDS = Histogram(
    "recsys_events_batch_seconds",
    "Time from a poll returning a batch to its offsets being committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SIZE = Histogram(
    "recsys_events_batch_records",
    "Records per polled batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
LAG = Gauge(
    "recsys_events_consumer_lag",
    "Records between the committed position and the partition's high watermark.",
    ["topic", "partition"],
)
DEPENDENCY_ERRORS = Counter(
    "recsys_events_dependency_errors_total",
    "Failed calls to a dependency that were retried, by dependency.",
    ["dependency"],
)
DEGRADED = Gauge(
    "recsys_events_degraded",
    "1 while Redis or Kafka is failing and the consumer is backing off.",
)
REDIS_ROUND_TRIPS = Counter(
    "recsys_events_redis_round_trips_total",
    "Redis network round trips made to apply batches.",
)
CONSUMER_RESTARTS = Counter(
    "recsys_events_consumer_restarts_total",
    "Kafka consumers closed and rebuilt by the stall watchdog, by reason (join, no_progress).",
    ["reason"],
)


for _kind in EVENT_TYPE_NAMES.values():
    PROCESSED.labels(_kind)
for _reason in REASON_CODES:
    DEAD_LETTERED.labels(_reason)
