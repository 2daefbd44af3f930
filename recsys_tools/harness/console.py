"""The console with the services it reads, and a headless Chromium to look at it.

Shared by the real-browser tests (``tests/integration/test_console_browser.py``), the
benchmark that reports their figures (``bench/console_browser.py``) and the demo, so the
three start the same processes the same way: the events service consuming a topic into
Redis, the recommender (gRPC, HTTP), each with a metrics port the console scrapes, and the
console itself. Browser: Debian's ``chromium`` driven by Playwright (the ``[dev]`` extra);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_tools.harness.process import free_port
from recsys_tools.harness.services import (
    QUIET_ENV,
    Service,
    events_service,
    start_service,
    wait_for,
    wait_serving,
)
from recsys_tools.infra.endpoints import KafkaEndpoint

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str | None:
    """Debian's chromium (``CHROMIUM`` overrides), None when it is not installed."""
    for candidate in (os.environ.get("CHROMIUM", ""), "/usr/bin/chromium", "chromium"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return int(reply.status) == 200
    except OSError:
        return False


def console_service(env: dict[str, str], work_dir: Path, *, port: int | None = None,
                    timeout_s: float = 60.0) -> Service:  # fmt: skip
    """``python -m services.console`` on ``port`` (a free one by default), once it answers."""
    port = port or free_port()
    service = Service("console", ["services.console"], {
        **QUIET_ENV, "CONSOLE_HOST": "127.0.0.1", "CONSOLE_PORT": str(port), **env,
    }, log_path=work_dir / f"console-{port}.log",
       ready=lambda _: http_ok(f"http://127.0.0.1:{port}/healthz"))  # fmt: skip
    service.console_port = port  # type: ignore[attr-defined]
    service.start()
    try:
        wait_serving(service, timeout_s)
    except BaseException:
        service.stop()
        raise
    return service


@dataclass
class ConsoleStack:
    """The running stack: where each part answers, and a producer for clicks."""

    console_url: str
    recommender: Service
    events: Service
    console: Service
    kafka: KafkaEndpoint
    topic: str
    producer: Any = None
    sent: int = 0
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def click(self, user: str, item: str) -> float:
        """Produce one click to Kafka as a shop frontend would; returns when it was sent
        (``time.time()``, after the broker acknowledged it)."""
        from recsys.events.v1 import events_pb2
        from recsys.kafka_codec import encode
        from recsys.kafka_io import make_producer

        if self.producer is None:
            self.producer = make_producer(self.kafka.bootstrap, linger_ms=0)
        self.sent += 1
        event = events_pb2.ClickEvent(event_id=f"{self.topic}-console-{self.sent}-{time.time_ns()}",
                                      user_id=user, item_id=item,
                                      event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
        event.event_time.FromNanoseconds(time.time_ns())
        value, headers = encode(event)
        self.producer.send(self.topic, key=user.encode(), value=value, headers=list(headers))
        self.producer.flush(10)
        return time.time()

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None


@contextlib.contextmanager
def console_stack(kafka: KafkaEndpoint, redis_url: str, topic: str, prefix: str,
                  model_dir: Path, work_dir: Path) -> Iterator[ConsoleStack]:  # fmt: skip
    """Events service, recommender and console on loopback, each stopped on exit."""
    ports = {"events": free_port(), "recommender": free_port()}
    with events_service(kafka, redis_url, topic, prefix, work_dir,
                        METRICS_PORT=str(ports["events"]),
                        EVENTS_POLL_TIMEOUT_MS="50") as events:  # fmt: skip
        recommender = start_service("recommender", ["services.recommender"], {
            "RECSYS_MODEL_DIR": str(model_dir), "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix, "GRPC_HOST": "127.0.0.1", "WORKERS": "1",
            "METRICS_PORT": str(ports["recommender"]), "RELOAD_INTERVAL_S": "0",
            "GRACE_S": "2",
        }, work_dir)  # fmt: skip
        try:
            wait_serving(recommender, 120)
            scrape = ",".join(f"{n}=http://127.0.0.1:{p}/metrics" for n, p in ports.items())
            console = console_service({
                "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
                "CONSOLE_RECOMMENDER_TARGET": recommender.target, "CONSOLE_SCRAPE": scrape,
                "CONSOLE_TOKEN": "test-token", "METRICS_PORT": "0", "GRACE_S": "2",
            }, work_dir)  # fmt: skip
            port = console.console_port  # type: ignore[attr-defined]
            stack = ConsoleStack(f"http://127.0.0.1:{port}", recommender, events, console,
                                 kafka, topic, metrics_ports=ports)  # fmt: skip
            try:
                yield stack
            finally:
                stack.close()
                console.stop()
        finally:
            recommender.stop()


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's chromium, with the flags of docs/console.md."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True,
                                     args=list(CHROMIUM_FLAGS))  # fmt: skip
        try:
            yield browser
        finally:
            browser.close()


def load_ms(page: Any, url: str) -> float:
    """Open ``url`` and return the browser's own navigation time to the load event (ms)."""
    page.goto(url, wait_until="load")
    timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].toJSON())")
    entry = json.loads(timing)
    return float(entry["loadEventEnd"] - entry["startTime"])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def click_to_visible_ms(stack: ConsoleStack, page: Any, user: str, item: str,
                        timeout_s: float = 10.0) -> float:  # fmt: skip
    """Produce a click of ``user`` on ``item`` with the user page open; the milliseconds
    until the page shows it as the newest recent event (the live part polls)."""
    sent = stack.click(user, item)
    page.wait_for_function(
        "item => { const c = document.querySelector('#recent tbody tr td code');"
        " return c !== null && c.textContent === item; }",
        arg=item,
        timeout=timeout_s * 1000,
        polling=10,
    )
    return (time.time() - sent) * 1000


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "p95": round(p95(values), 1),
            "max": round(max(values), 1), "n": len(values)}  # fmt: skip


def wait_applied(stack: ConsoleStack, store: Any, user: str, timeout_s: float = 60.0) -> None:
    """Until the events service has applied something of ``user`` (the consumer joined)."""
    wait_for(lambda: bool(store.get_user_state(user).recent), timeout_s=timeout_s,
             what=f"a click of {user} applied")  # fmt: skip
