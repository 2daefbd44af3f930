"""``recsys-console`` / ``python -m services.console``: the web console.

A service of its own rather than pages inside the recommender: it reads three services
(the recommender's API, the feature store, every service's metrics), and a recommender
worker should spend its loop on Recommend. It holds no state of its own, so any number of
replicas can run; SIGTERM (uvicorn's handler) stops accepting and lets requests in flight
finish for up to ``GRACE_S``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Sequence

import grpc
import uvicorn

from recsys.errors import RecsysError
from recsys.http_api import bind_socket
from recsys.log import configure_logging
from recsys.metrics import start_metrics_server
from recsys.ports import ensure_port_free
from recsys.recommender.v1 import recommender_pb2_grpc as pb_grpc
from recsys.store import open_store
from services.console import metrics as _metrics  # noqa: F401 - the series exist from start
from services.console.app import Backends, Scraper, create_app
from services.console.config import ConsoleSettings, load_settings

log = logging.getLogger("services.console")


def build(settings: ConsoleSettings) -> tuple[uvicorn.Server, Backends, grpc.Channel]:
    store = open_store(settings.redis_url, prefix=settings.key_prefix,
                       timeout_s=settings.redis_timeout_s, check=False)  # fmt: skip
    channel = grpc.insecure_channel(settings.recommender_target)
    token = settings.recommender_token
    backends = Backends(store, pb_grpc.RecommenderServiceStub(channel),
                        Scraper(settings.scrape, settings.scrape_timeout_s),
                        (("authorization", f"Bearer {token}"),) if token else ())  # fmt: skip
    config = uvicorn.Config(create_app(settings, backends), http="httptools", lifespan="off",
                            access_log=False, log_config=None,
                            timeout_graceful_shutdown=math.ceil(settings.grace_s))  # fmt: skip
    return uvicorn.Server(config), backends, channel


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # configuration comes from the environment only
    try:
        settings = load_settings()
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging("console", settings.log_level)
    try:
        ensure_port_free(settings.host, settings.port, "CONSOLE_PORT")
        sock = bind_socket(settings.host, settings.port, "CONSOLE_PORT", reuse_port=False)
        metrics_port = start_metrics_server(settings.metrics_port)
    except RecsysError as exc:
        log.error("console failed", extra={"error": str(exc)})
        return 2
    server, backends, channel = build(settings)
    log.info("console listening", extra={"port": sock.getsockname()[1],
                                         "metrics_port": metrics_port,
                                         "actions": bool(settings.token)})  # fmt: skip
    try:
        server.run(sockets=[sock])  # returns after SIGTERM/SIGINT and the drain
    finally:
        channel.close()
        with contextlib.suppress(Exception):
            backends.store.close()
        sock.close()
        log.info("console stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
