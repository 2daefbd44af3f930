"""The whole pipeline as subprocesses, for the fault suite, the soak and the system benchmarks.

One real Apache Kafka broker (or ``KAFKA_BOOTSTRAP_SERVERS``'s choice, as the test fixtures
make it) and one real ``redis-server`` with its append-only file on; each run ("stack") gets
its own topics, consumer groups and Redis key prefix and starts the three services with
``python -m``, configured only through the environment, as a deployment runs them:

- ``services.events``       click events → Redis features
- ``services.sentiment consume``  feedback → scored feedback + suppression / sentiment in Redis
- ``services.recommender``  gRPC Recommend over the model and the live features

The producers here are at-least-once on purpose: a chunk whose send fails (the broker is
restarting) is sent again whole, because the consumers are expected to be idempotent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_tools.harness import Service, free_port, wait_for
from recsys_tools.harness.features import HALF_LIFE, RECENT_CAP

ROOT = Path(__file__).resolve().parents[1]
#: Large, so the decayed per-user sentiment ``n`` counts the records folded in.
SENTIMENT_HALF_LIFE = 1e9
FEEDBACK_TIME = 1_700_000_000.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ infrastructure
@dataclass
class Infra:
    kafka: Any  # recsys_tools.infra.endpoints.KafkaEndpoint
    redis: Any  # recsys_tools.infra.redis_server.RedisServer
    work_dir: Path

    @property
    def bootstrap(self) -> str:
        return str(self.kafka.bootstrap)

    @property
    def redis_url(self) -> str:
        return str(self.redis.url)

    def kafka_pid(self) -> int | None:
        server = self.kafka.server
        return getattr(server, "pid", None) if server is not None else None


@contextlib.contextmanager
def infrastructure(work_dir: Path, *, require_apache: bool = True) -> Iterator[Infra]:
    """Apache Kafka (restartable, same ports and data) and an appendonly redis-server."""
    from recsys_tools.infra.apache_kafka import jars_present, kafka_version
    from recsys_tools.infra.launcher import resolve_kafka_kind, start_kafka
    from recsys_tools.infra.redis_server import RedisServer

    env = dict(os.environ)
    kind = "apache" if require_apache else resolve_kafka_kind(
        env, jars_cached=jars_present(kafka_version(env), env))  # fmt: skip
    kafka = start_kafka(kind, work_dir / "kafka")
    log(f"kafka: {kafka.description} at {kafka.bootstrap}")
    redis = RedisServer(work_dir / "redis", appendonly=True)
    try:
        redis.start()
        log(f"redis: {redis.description} at {redis.url} (appendonly)")
        yield Infra(kafka, redis, work_dir)
    finally:
        redis.stop()
        if kafka.server is not None:
            kafka.server.stop()


# --------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Workload:
    events: list[Any]  # recsys.events.v1.events_pb2.ClickEvent, in time order
    feedback: list[Any]  # recsys.feedback.v1.feedback_pb2.CustomerFeedback


def movielens_events(n: int, anchor: float) -> list[Any]:
    """The first ``n`` ML-100K ratings as rating events, the last one stamped ``anchor``."""
    from recsys_tools.data.fetch import fetch
    from recsys_tools.data.movielens import load_ml100k
    from services.events.replay import fast_events, ratings_from_interactions

    fetch(["ml-100k"], progress=False)
    ratings = ratings_from_interactions(load_ml100k().interactions, limit=n)
    return list(fast_events(ratings, anchor))


def feedback_records(n: int, users: list[str], items: list[str]) -> list[Any]:
    """Deterministic CRM feedback over the smoke model's sample texts, fixed timestamps."""
    from recsys.feedback.v1 import feedback_pb2
    from services.sentiment.smoke import SAMPLE

    out = []
    for i in range(n):
        text = SAMPLE[(i * 7) % len(SAMPLE)][0]
        msg = feedback_pb2.CustomerFeedback(
            feedback_id=f"fb-{i}", user_id=users[i % len(users)], text=text,
            source_system="faults", item_id=items[(i * 13) % len(items)],
        )  # fmt: skip
        msg.feedback_time.FromNanoseconds(int((FEEDBACK_TIME + i) * 1e9))
        out.append(msg)
    return out


def workload(n_events: int, n_feedback: int, anchor: float) -> Workload:
    events = movielens_events(n_events, anchor)
    users = sorted({e.user_id for e in events})
    items = sorted({e.item_id for e in events})
    return Workload(events, feedback_records(n_feedback, users, items))


# ---------------------------------------------------------------------------- services
def rss_mb(pid: int | None, children: bool = True) -> float:
    """Resident memory of a process (and its children), MiB; 0 when it is gone."""
    import psutil

    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)] if children else [proc]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20
    except psutil.Error:
        return 0.0


@dataclass(frozen=True)
class StackNames:
    events_topic: str
    feedback_topic: str
    scored_topic: str
    prefix: str

    @classmethod
    def for_run(cls, run: str) -> StackNames:
        return cls(f"sys.{run}.events", f"sys.{run}.feedback", f"sys.{run}.scored",
                   f"sys-{run}")  # fmt: skip

    @property
    def events_group(self) -> str:
        return f"{self.events_topic}-events"

    @property
    def sentiment_group(self) -> str:
        return f"{self.feedback_topic}-sentiment"


def base_env(infra: Infra, names: StackNames) -> dict[str, str]:
    """What every service of a stack is started with (over the harness's defaults)."""
    from recsys_tools.harness import kafka_env

    return {
        "REDIS_URL": infra.redis_url,
        "REDIS_KEY_PREFIX": names.prefix,
        "LOG_LEVEL": "info",
        # a SIGKILLed member's partitions move after the session timeout: keep it short
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        **kafka_env(infra.kafka),
    }


def make_topics(infra: Infra, names: StackNames, events_partitions: int = 3) -> None:
    from recsys.kafka_io import ensure_topics, make_consumer

    ensure_topics(infra.bootstrap, {
        names.events_topic: events_partitions, f"{names.events_topic}.dlq": 1,
        names.feedback_topic: 2, names.scored_topic: 1, f"{names.feedback_topic}.dlq": 1,
    })  # fmt: skip
    probe = make_consumer(infra.bootstrap, None, **infra.kafka.consumer_config())
    try:
        wait_for(lambda: len(probe.partitions_for_topic(names.events_topic) or ()) ==
                 events_partitions and bool(probe.partitions_for_topic(names.feedback_topic)),
                 30, "topic metadata")  # fmt: skip
    finally:
        probe.close()


def events_service(infra: Infra, names: StackNames, log_dir: Path, index: int = 0,
                   **extra: str) -> Service:  # fmt: skip
    """Not started; ready once it logged its first ``"serving": true`` (it has no known port)."""
    env = base_env(infra, names) | {
        "EVENTS_TOPIC": names.events_topic,
        "EVENTS_DLQ_TOPIC": f"{names.events_topic}.dlq",
        "EVENTS_GROUP_ID": names.events_group,
        "EVENTS_CREATE_TOPICS": "false",
        "EVENTS_POLL_TIMEOUT_MS": "200",
        "EVENTS_BACKOFF_MAX_S": "1",
        "EVENTS_HEALTH_CHECK_INTERVAL_S": "0.5",
        "RECENT_CAP": str(RECENT_CAP),
        "TRENDING_HALF_LIFE_S": str(HALF_LIFE),
        **extra,
    }
    return Service(f"events{index or ''}", ["services.events"], env,
                   log_path=log_dir / f"events{index}.log",
                   ready=lambda s: s.log_count('"serving": true') > 0)  # fmt: skip


def sentiment_service(infra: Infra, names: StackNames, log_dir: Path, model_dir: Path,
                      **extra: str) -> Service:  # fmt: skip
    """Not started; on a fixed port, so readiness is its gRPC health answer."""
    env = base_env(infra, names) | {
        "SENTIMENT_MODEL_DIR": str(model_dir),
        "SENTIMENT_TOPIC": names.feedback_topic,
        "SENTIMENT_OUTPUT_TOPIC": names.scored_topic,
        "SENTIMENT_DLQ_TOPIC": f"{names.feedback_topic}.dlq",
        "SENTIMENT_GROUP_ID": names.sentiment_group,
        "SENTIMENT_CREATE_TOPICS": "false",
        "SENTIMENT_POLL_TIMEOUT_MS": "200",
        "SENTIMENT_BACKOFF_MAX_S": "1",
        "SENTIMENT_HALF_LIFE_S": str(SENTIMENT_HALF_LIFE),
        "SENTIMENT_SUPPRESS_TTL_S": "86400",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **extra,
    }
    return Service("sentiment", ["services.sentiment", "consume"], env,
                   log_path=log_dir / "sentiment.log", port=free_port())  # fmt: skip


def recommender_service(infra: Infra, names: StackNames, log_dir: Path, model_dir: Path,
                        port: int, workers: int = 1, **extra: str) -> Service:  # fmt: skip
    """Not started; ``port`` is fixed so that a restart serves the same clients."""
    env = base_env(infra, names) | {
        "RECSYS_MODEL_DIR": str(model_dir),
        "GRPC_HOST": "127.0.0.1",
        "WORKERS": str(workers),
        "GRACE_S": "2",
        "RELOAD_INTERVAL_S": "0",
        **extra,
    }
    return Service("recommender", ["services.recommender"], env,
                   log_path=log_dir / "recommender.log", port=port)  # fmt: skip


# ------------------------------------------------------------------------------- models
def recommender_model(work_dir: Path) -> Path:
    """ALS on the first half of ML-100K in time order, published into ``work_dir/model``."""
    from bench.recommender_common import ml100k_split, train_ml100k

    store = work_dir / "model"
    store.mkdir(parents=True, exist_ok=True)
    train_ml100k(ml100k_split(0.5), store)
    return store


def sentiment_model(work_dir: Path) -> Path:
    """The seconds-long smoke model (production architecture), trained in a child process
    so that TensorFlow's memory and threads do not stay in the driver."""
    base = work_dir / "sentiment-model"
    code = ("import sys; from pathlib import Path; from services.sentiment.smoke import "
            "train_smoke_model; train_smoke_model(Path(sys.argv[1]), version=1)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, str(base)], cwd=ROOT, check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)  # fmt: skip
    return base


# ---------------------------------------------------------------------------- producers
class Producer(threading.Thread):
    """Sends records in chunks at full speed; a chunk whose delivery fails is sent again."""

    def __init__(self, bootstrap: str, topic: str, records: list[Any],
                 chunk: int = 500, repeat: bool = False,
                 stop: threading.Event | None = None,
                 hold: Callable[[int], bool] | None = None) -> None:  # fmt: skip
        super().__init__(daemon=True, name=f"producer-{topic}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.chunk = chunk
        self.repeat = repeat
        self.stop_event = stop or threading.Event()
        #: ``hold(sent)`` true: wait before the next chunk (bounds the backlog of a soak)
        self.hold = hold
        self.sent = 0
        self.resent_chunks = 0
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def _producer(self) -> Any:
        from recsys.kafka_io import make_producer

        return make_producer(self.bootstrap, linger_ms=5, client_id=f"sys-{self.topic}")

    def run(self) -> None:
        from recsys.kafka_codec import encode

        producer = None
        try:
            rnd = 0
            while not self.stop_event.is_set():
                for start in range(0, len(self.records), self.chunk):
                    if self.stop_event.is_set():
                        break
                    while self.hold is not None and self.hold(self.sent):
                        if self.stop_event.wait(0.05):
                            break
                    part = self.records[start : start + self.chunk]
                    for attempt in range(60):
                        try:
                            if producer is None:
                                producer = self._producer()
                            futures = []
                            for rec in part:
                                value, headers = encode(self._renamed(rec, rnd))
                                futures.append(producer.send(
                                    self.topic, key=rec.user_id.encode(), value=value,
                                    headers=list(headers)))  # fmt: skip
                            producer.flush(timeout=30)
                            for f in futures:
                                f.get(timeout=30)
                            break
                        except Exception:
                            self.resent_chunks += 1
                            if producer is not None:
                                with contextlib.suppress(Exception):
                                    producer.close(timeout=1)
                            producer = None
                            if attempt == 59:
                                raise
                            time.sleep(1.0)
                    self.sent += len(part)
                rnd += 1
                if not self.repeat:
                    break
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.close(timeout=5)

    def _renamed(self, rec: Any, rnd: int) -> Any:
        """For the soak: round ``rnd`` sends fresh ids (new events), not replays."""
        if rnd == 0:
            return rec
        out = type(rec)()
        out.CopyFrom(rec)
        if hasattr(out, "event_id"):
            out.event_id = f"{rec.event_id}-r{rnd}"
            out.event_time.FromNanoseconds(time.time_ns())
        else:
            out.feedback_id = f"{rec.feedback_id}-r{rnd}"
        return out


# -------------------------------------------------------------------------- gRPC client
@dataclass
class CallRecord:
    t: float
    code: str
    retry_of_failure: bool
    #: how long the call took, and whether an OK answer came from the degraded path
    latency_s: float = 0.0
    degraded: bool = False


class ClientLoop(threading.Thread):
    """Calls Recommend in a loop with a deadline, no channel-level retries, so every
    attempt's status is seen; after a failure it retries (backoff) until one succeeds."""

    def __init__(self, target: str, users: list[str], deadline_s: float = 2.0,
                 pause_s: float = 0.02) -> None:  # fmt: skip
        super().__init__(daemon=True, name="client-loop")
        self.target = target
        self.users = users
        self.deadline_s = deadline_s
        self.pause_s = pause_s
        self.stop_event = threading.Event()
        self.calls: list[CallRecord] = []
        self.unrecovered = False

    def run(self) -> None:
        import grpc

        from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc

        channel = grpc.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        i = 0
        failing = False
        backoff = 0.05
        try:
            while not self.stop_event.is_set():
                user = self.users[i % len(self.users)]
                i += 1
                request = recommender_pb2.RecommendRequest(user_id=user, k=10)
                started = time.monotonic()
                degraded = False
                try:
                    degraded = bool(stub.Recommend(request, timeout=self.deadline_s).degraded)
                    code = "OK"
                except grpc.RpcError as exc:
                    status = exc.code() if hasattr(exc, "code") else None
                    code = status.name if status is not None else "UNKNOWN"
                now = time.monotonic()
                self.calls.append(CallRecord(now, code, failing, now - started, degraded))
                if code == "OK":
                    failing, backoff = False, 0.05
                    time.sleep(self.pause_s)
                else:
                    failing = True
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
            self.unrecovered = failing
        finally:
            channel.close()

    def summary(self) -> dict[str, Any]:
        codes: dict[str, int] = defaultdict(int)
        for c in self.calls:
            codes[c.code] += 1
        bad = [c for c in self.calls if c.code != "OK"]
        window = (bad[-1].t - bad[0].t) if bad else 0.0
        return {"calls": len(self.calls), "codes": dict(codes),
                "outage_window_s": round(window, 2), "recovered": not self.unrecovered}  # fmt: skip


# ------------------------------------------------------------------------- consumer lag
def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """End offsets minus the group's committed offsets (None: not readable right now).

    A member of the group that never subscribes reads the committed offsets without
    joining, so asking does not rebalance the service's consumers.
    """
    from kafka import TopicPartition

    from recsys.kafka_io import make_consumer

    consumer = None
    try:
        consumer = make_consumer(bootstrap, group, client_id="sys-lag-probe")
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return None
        ends = consumer.end_offsets(tps)
        return int(sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps))
    except Exception:
        return None
    finally:
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False)


def read_topic(bootstrap: str, topic: str, idle_s: float = 3.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (stops after ``idle_s`` with nothing new)."""
    from recsys.kafka_io import make_consumer

    consumer = make_consumer(bootstrap, None, topic, consumer_timeout_ms=int(idle_s * 1000),
                             auto_offset_reset="earliest")  # fmt: skip
    try:
        return list(consumer)
    finally:
        consumer.close()


def applied_events(client: Any, prefix: str) -> int:
    from recsys.store import KeySchema

    return sum(int(v) for v in client.hvals(KeySchema(prefix).counters()))
