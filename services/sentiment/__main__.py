"""``recsys-sentiment [serve|consume]``: wire settings, backend, transport.

``serve`` (default) runs the gRPC SentimentService; ``consume`` runs the Kafka
feedback loop with a health-only gRPC server. One process per container, so
the two scale (and fail) independently; both use the backend SENTIMENT_BACKEND
names.

Startup order: health server NOT_SERVING and metrics first so probes see the
process; then load the model (or reach TF Serving) and, for ``consume``, Kafka
and Redis, failing fast with a one-line error; then SERVING. SIGTERM/SIGINT:
health NOT_SERVING and its Watch streams ended (``HealthState.shutdown``: an open one
would hold the drain), the gRPC server drains for GRACE_S (or the loop
finishes its batch), clients close.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

from recsys.auth import AuthSettings, load_auth_settings
from recsys.errors import RecsysError
from recsys.health import HealthState, health_only_server
from recsys.log import configure_logging
from recsys.metrics import start_metrics_server
from recsys.shutdown import install_stop_handlers
from services.sentiment.config import SentimentSettings, load_settings

log = logging.getLogger("services.sentiment")


def serve(settings: SentimentSettings, auth: AuthSettings, stop: threading.Event) -> int:
    from services.sentiment.backends import make_backend
    from services.sentiment.server import SERVICE_NAME, SwappablePredictor, create_server

    health = HealthState([SERVICE_NAME])
    backend = None
    predictor = SwappablePredictor()
    server, port = create_server(predictor, settings, health, auth=auth.policy)
    server.start()
    metrics_port = start_metrics_server(settings.metrics_port)
    log.info(
        "sentiment service starting",
        extra={"grpc_port": port, "metrics_port": metrics_port, "backend": settings.backend,
               "auth": auth.mode},
    )  # fmt: skip
    if not auth.enabled:
        log.warning("AUTH_MODE=off: every caller may call every method (local demo only)")
    try:
        backend = make_backend(settings)
        predictor.set(backend)
        health.set_serving(True)
        log.info(
            "sentiment service serving",
            extra={"model_version": backend.model_version, "backend": backend.name},
        )
        stop.wait()
        return 0
    finally:
        health.shutdown()
        server.stop(grace=settings.shutdown_grace_s).wait(settings.shutdown_grace_s + 1)
        if backend is not None:
            backend.close()


def consume(settings: SentimentSettings, stop: threading.Event) -> int:
    from recsys.kafka_io import consumer_factory, make_producer, prepare_topics
    from recsys.store import open_store
    from services.sentiment.backends import make_backend
    from services.sentiment.consumer import SentimentConsumer

    health = HealthState()
    server, grpc_port = health_only_server(health, settings.grpc_port)
    server.start()
    metrics_port = start_metrics_server(settings.metrics_port)
    log.info(
        "sentiment consumer starting",
        extra={
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "topic": settings.consumer.topic,
        },
    )
    backend = consumer = producer = store = None
    loop: SentimentConsumer | None = None
    try:
        backend = make_backend(settings)
        prepare_topics(
            settings.consumer, {settings.output_topic: settings.consumer.topic_partitions}
        )
        store = open_store(
            settings.redis_url,
            prefix=settings.key_prefix,
            cluster=settings.redis_cluster,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        producer = make_producer(
            settings.consumer.bootstrap,
            security=settings.consumer.security,
            client_id="recsys-sentiment",
        )
        new_consumer = consumer_factory(settings.consumer)
        consumer = new_consumer()
        loop = SentimentConsumer(
            settings, consumer, producer, store, backend, health, consumer_factory=new_consumer
        )
        loop.run(stop)
        log.info(
            "sentiment consumer stopped",
            extra={
                "batches": loop.batches,
                "scored": loop.scored,
                "suppressed": loop.suppressed,
                "dead_lettered": loop.dead_lettered,
                "consumer_restarts": loop.restarts,
            },
        )
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
        if backend is not None:
            backend.close()
        server.stop(grace=2).wait(3)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = args[0] if args else "serve"
    if mode not in ("serve", "consume") or len(args) > 1:
        print(
            "usage: recsys-sentiment [serve|consume]  (settings from the environment)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_settings()
        # Only the API needs credentials: the consumer serves health alone.
        auth = load_auth_settings() if mode == "serve" else AuthSettings("off")
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging("sentiment", settings.log_level)
    stop = threading.Event()
    install_stop_handlers(stop, log)
    try:
        return serve(settings, auth, stop) if mode == "serve" else consume(settings, stop)
    except RecsysError as exc:
        log.error("sentiment service failed", extra={"error": str(exc)})
        return 2


if __name__ == "__main__":
    sys.exit(main())
