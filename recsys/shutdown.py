"""Graceful shutdown: SIGTERM (Kubernetes) and SIGINT (Ctrl-C) set a stop event.

Every service's main loop waits on that event instead of being interrupted, so it can
report NOT_SERVING, drain, commit and close its clients in order.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def install_stop_handlers(
    stop: threading.Event, log: logging.Logger, message: str = "signal received; stopping"
) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (main thread only, as Python requires)."""

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info(message, extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
