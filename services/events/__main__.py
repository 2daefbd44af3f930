"""``recsys-events`` / ``python -m services.events``: wire settings, clients and the loop.

Startup order: health server (NOT_SERVING) and metrics first so probes can see
the process, then fail fast if Kafka or Redis is unreachable, then consume.
SIGTERM/SIGINT stop the loop after the current batch (or abandon a batch that
is waiting on a dependency, uncommitted), then the clients close and health
goes NOT_SERVING for good.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

from recsys.errors import RecsysError
from recsys.health import HealthState, health_only_server
from recsys.kafka_io import consumer_factory, make_producer, prepare_topics
from recsys.log import configure_logging
from recsys.metrics import start_metrics_server
from recsys.runtime import settle_heap
from recsys.shutdown import install_stop_handlers
from recsys.store import FeatureStore, open_store
from services.events.config import EventsSettings, load_settings
from services.events.consumer import EventsConsumer

log = logging.getLogger("services.events")


def make_store(settings: EventsSettings) -> FeatureStore:
    """The store in the configured write layout, scripts loaded (fails fast if down)."""
    return open_store(
        settings.redis_url,
        prefix=settings.key_prefix,
        config=settings.store,
        cluster=settings.redis_cluster,
        max_events_per_script=settings.redis_script_max_events,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


def run(settings: EventsSettings, stop: threading.Event) -> int:
    health = HealthState()
    server, grpc_port = health_only_server(health, settings.grpc_port)
    server.start()
    metrics_port = start_metrics_server(settings.metrics_port)
    log.info(
        "events service starting",
        extra={
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "topic": settings.consumer.topic,
            "group_id": settings.consumer.group_id,
        },
    )
    consumer = producer = store = None
    loop: EventsConsumer | None = None
    try:
        prepare_topics(settings.consumer)
        store = make_store(settings)
        producer = make_producer(
            settings.consumer.bootstrap,
            security=settings.consumer.security,
            client_id="recsys-events-dlq",
        )
        new_consumer = consumer_factory(settings.consumer)
        consumer = new_consumer()
        loop = EventsConsumer(
            settings, consumer, producer, store, health, consumer_factory=new_consumer
        )
        settle_heap()  # kafka-python's per-record garbage is short-lived
        loop.run(stop)
        log.info(
            "events service stopped",
            extra={"batches": loop.batches, "applied": loop.applied,
                   "duplicates": loop.duplicates, "dead_lettered": loop.dead_lettered,
                   "consumer_restarts": loop.restarts},
        )  # fmt: skip
        return 0
    finally:
        health.shutdown()
        if loop is not None:
            consumer = loop.consumer  # the watchdog may have replaced the first one
        if consumer is not None:
            consumer.close(autocommit=False)
        if producer is not None:
            producer.close(timeout=5)
        if store is not None:
            store.close()
        server.stop(grace=2).wait(3)


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # configuration comes from the environment only
    try:
        settings = load_settings()
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging("events", settings.log_level)
    stop = threading.Event()
    install_stop_handlers(stop, log)
    try:
        return run(settings, stop)
    except RecsysError as exc:
        log.error("events service failed", extra={"error": str(exc)})
        return 2


if __name__ == "__main__":
    sys.exit(main())
