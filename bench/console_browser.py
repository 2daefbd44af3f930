"""Console page render time and click-to-visible, in headless Chromium, under a click stream.

The issue's two console goals, measured as the browser test measures them, on the ML-100K
model: the events service consuming a Kafka topic into Redis, the recommender, the console
(``recsys_tools.harness.console``), and a producer replaying the timeline after the training
cut at ``--rate`` clicks/s meanwhile, the load the demo puts on the same services.

- render: the browser's own navigation time to the load event of each console page (user,
  explanation, item, system), ``--rounds`` visits each after one warm-up visit;
- click-to-visible: with a user page open, a click produced to Kafka until the page shows
  it as the user's newest event (``--clicks`` times).

    python -m bench.console_browser [--quick] [--rate 200] [--rounds 10] [--clicks 10]

Ends with one JSON line: render_p95_ms, render_p50_ms, click_to_visible_p50_ms,
click_to_visible_p95_ms, click_to_visible_max_ms, and the pages' own p95s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.recommender_common import (
    kafka_endpoint,
    log,
    ml100k_split,
    redis_endpoint,
    seed_ml100k_state,
    train_ml100k,
)
from recsys_tools.harness.console import (
    click_to_visible_ms,
    console_stack,
    headless_chromium,
    load_ms,
    summary_ms,
)

PREFIX = "bench-console"
TOPIC = "bench-console-clicks"


def replay(stack: Any, pairs: list[tuple[str, str]], rate: float, stop: threading.Event) -> None:
    """Produce the timeline's (user, item) pairs at ``rate`` per second until stopped."""
    from recsys.events.v1 import events_pb2
    from recsys.kafka_codec import encode
    from recsys.kafka_io import make_producer

    producer = make_producer(stack.kafka.bootstrap, linger_ms=5)
    interval = 1.0 / rate
    next_at = time.perf_counter()
    n = 0
    try:
        while not stop.is_set():
            user, item = pairs[n % len(pairs)]
            event = events_pb2.ClickEvent(event_id=f"replay-{n}", user_id=user, item_id=item,
                                          event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
            event.event_time.FromNanoseconds(time.time_ns())
            value, headers = encode(event)
            producer.send(TOPIC, key=user.encode(), value=value, headers=list(headers))
            n += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
    finally:
        producer.close(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer visits and clicks")
    parser.add_argument("--rate", type=float, default=200.0, help="background clicks/s")
    parser.add_argument("--rounds", type=int, default=None, help="visits per page (10 / 20)")
    parser.add_argument("--clicks", type=int, default=None, help="timed clicks (10 / 30)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 20)
    clicks = args.clicks or (10 if args.quick else 30)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        work = Path(tmp)
        with redis_endpoint(work / "redis") as redis_url, kafka_endpoint(work / "kafka") as kafka:
            data = ml100k_split(0.8)
            store = work / "ml-store"
            train_ml100k(data, store)
            seed_ml100k_state(redis_url, PREFIX, data)
            lg = data.log
            pairs = [(lg.user_ids[int(lg.users[e])], lg.item_ids[int(lg.items[e])])
                     for e in data.rest_idx]  # fmt: skip
            user = pairs[0][0]
            with console_stack(kafka, redis_url, TOPIC, PREFIX, store, work) as stack, \
                    headless_chromium() as browser:  # fmt: skip
                stop = threading.Event()
                producer = threading.Thread(target=replay, args=(stack, pairs, args.rate, stop),
                                            daemon=True)  # fmt: skip
                producer.start()
                try:
                    page = browser.new_page()
                    base = stack.console_url
                    # the first click waits for the consumer to join; not timed
                    page.goto(f"{base}/users/{user}", wait_until="load")
                    click_to_visible_ms(stack, page, user, pairs[1][1], timeout_s=120)
                    visible = []
                    for n in range(clicks):
                        item = pairs[(n * 37 + 5) % len(pairs)][1]
                        visible.append(click_to_visible_ms(stack, page, user, item))
                        page.wait_for_timeout(200)
                    log(f"click-to-visible: {summary_ms(visible)}")
                    why_item = page.eval_on_selector("#recommendations li", "e => e.dataset.item")
                    pages = {
                        "user": f"{base}/users/{user}",
                        "why": f"{base}/users/{user}/why/{why_item}",
                        "item": f"{base}/items/{why_item}",
                        "system": f"{base}/system",
                    }
                    for url in pages.values():
                        load_ms(page, url)
                    times: dict[str, list[float]] = {name: [] for name in pages}
                    for _ in range(rounds):
                        for name, url in pages.items():
                            times[name].append(load_ms(page, url))
                    for name, values in times.items():
                        log(f"render {name}: {summary_ms(values)}")
                finally:
                    stop.set()
                    producer.join(10)
    everything = [t for values in times.values() for t in values]
    render = summary_ms(everything)
    click = summary_ms(visible)
    headline = {
        "render_p95_ms": render["p95"],
        "render_p50_ms": render["p50"],
        "click_to_visible_p50_ms": click["p50"],
        "click_to_visible_p95_ms": click["p95"],
        "click_to_visible_max_ms": click["max"],
        "pages_p95_ms": {name: summary_ms(values)["p95"] for name, values in times.items()},
        "background_clicks_per_s": args.rate,
        "load_before": [round(x, 1) for x in load_before],
        "load_after": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
