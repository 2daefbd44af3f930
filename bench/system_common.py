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
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EPOCH = 946_684_800.0
RECENT_CAP = 20
HALF_LIFE = 3600.0
#: Large, so the decayed per-user sentiment ``n`` counts the records folded in.
SENTIMENT_HALF_LIFE = 1e9
FEEDBACK_TIME = 1_700_000_000.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             poll_s: float = 0.2) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


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


# ------------------------------------------------------------------ expected features
def expected_event_features(events: list[Any], prefix: str,
                            rating_scale: float = 1.0,
                            rating_offset: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """The events service's Redis features, computed here with plain Python (docs/events.md)."""
    from recsys.events.v1 import events_pb2
    from recsys.store import KeySchema

    weights_of = {events_pb2.EVENT_TYPE_VIEW: ("view", 1.0), events_pb2.EVENT_TYPE_CLICK:
                  ("click", 2.0), events_pb2.EVENT_TYPE_ADD_TO_CART: ("add_to_cart", 4.0),
                  events_pb2.EVENT_TYPE_PURCHASE: ("purchase", 8.0)}  # fmt: skip
    keys = KeySchema(prefix)
    recent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    weights: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counters: dict[str, int] = defaultdict(int)
    trend: dict[str, list[float]] = defaultdict(list)
    seen: set[str] = set()
    lam = math.log(2) / HALF_LIFE
    for ev in events:
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if ev.event_type == events_pb2.EVENT_TYPE_RATING:
            kind, w = "rating", rating_scale * (ev.value - rating_offset)
        else:
            kind, w = weights_of[ev.event_type]
        ts = ev.event_time.seconds + ev.event_time.nanos / 1e9
        recent[ev.user_id].append({"item": ev.item_id, "type": kind, "weight": w, "ts": ts})
        weights[ev.user_id][ev.item_id] += w
        counters[kind] += 1
        if w > 0:
            trend[ev.item_id].append(math.log(w) + lam * (ts - EPOCH))
    out: dict[str, Any] = {}
    for user, rows in recent.items():
        out[keys.recent(user)] = list(reversed(rows))[:RECENT_CAP]
        out[keys.seen(user)] = sorted({r["item"] for r in rows})
        out[keys.weights(user)] = dict(weights[user])
    out[keys.counters()] = dict(counters)
    trending = {}
    for item, terms in trend.items():
        m = max(terms)
        trending[item] = m + math.log(math.fsum(math.exp(t - m) for t in terms))
    out[keys.trending()] = trending
    return out


def normalised_dump(client: Any, prefix: str) -> dict[str, Any]:
    """Redis features under ``prefix`` in comparable form, keys renamed to ``<prefix>`` → ``P``.

    Time-dependent values are reduced to what two runs must share: a suppression set to
    its members (its scores are expiry times), a sentiment hash to its (avg, n) pair.
    """
    import json

    from recsys.store import KeySchema
    from recsys.store.redis_store import dump_features

    keys = KeySchema(prefix)
    out: dict[str, Any] = {}
    for key, value in dump_features(client, keys).items():
        if key.endswith(":recent"):
            v: Any = [json.loads(x) for x in value]
        elif key.endswith(":weights"):
            v = {k: float(x) for k, x in value.items()}
        elif key == keys.counters():
            v = {k: int(x) for k, x in value.items()}
        elif key.endswith(":suppressed"):
            v = sorted(value)
        elif key.endswith(":sentiment"):
            v = {"avg": float(value.get("avg", "nan")), "n": float(value.get("n", "nan"))}
        else:
            v = value
        out["P" + key[len(prefix) :]] = v
    return out


def compare_features(actual: dict[str, Any], expected: dict[str, Any],
                     rel: float = 1e-9) -> list[str]:  # fmt: skip
    """Differences between two normalised dumps (empty when equal within float rounding)."""
    diffs: list[str] = []
    for key in sorted(set(actual) ^ set(expected)):
        diffs.append(f"{key}: only in {'actual' if key in actual else 'expected'}")
    for key in sorted(set(actual) & set(expected)):
        a, e = actual[key], expected[key]
        if not _close(a, e, rel):
            diffs.append(f"{key}: {str(a)[:120]} != {str(e)[:120]}")
    return diffs


def _close(a: Any, e: Any, rel: float) -> bool:
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(_close(a[k], e[k], rel) for k in a)
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(_close(x, y, rel) for x, y in zip(a, e, strict=True))
    if isinstance(a, float) or isinstance(e, float):
        try:
            return math.isclose(float(a), float(e), rel_tol=rel, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return bool(a == e)


# ---------------------------------------------------------------------------- services
@dataclass
class Service:
    """One service subprocess; ``restart()`` reuses its environment (same group, same port)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[Service], bool] = field(default=lambda s: True)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, timeout_s: float = 120.0) -> Service:
        return self.spawn().wait_ready(timeout_s)

    def spawn(self) -> Service:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> Service:
        proc = self.proc
        assert proc is not None, "spawn() first"

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}: {self.tail()}")
            return self.ready(self)

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if up():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s: {self.tail()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a recommender with workers has children)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0


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
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "REDIS_URL": infra.redis_url,
        "REDIS_KEY_PREFIX": names.prefix,
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
        # a SIGKILLed member's partitions move after the session timeout: keep it short
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for key, value in infra.kafka.consumer_overrides.items():
        env[f"KAFKA_{key.upper()}"] = str(value)
    return env


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


def events_service(infra: Infra, names: StackNames, log_dir: Path, index: int = 0) -> Service:
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
    }
    return Service(f"events{index or ''}", [sys.executable, "-m", "services.events"], env,
                   log_dir / f"events{index}.log",
                   ready=lambda s: s.log_count('"serving": true') > 0)  # fmt: skip


def sentiment_service(infra: Infra, names: StackNames, log_dir: Path, model_dir: Path) -> Service:
    from recsys_tools.infra.process import free_port

    port = free_port()  # a fixed port, so readiness is the gRPC health answer
    env = base_env(infra, names) | {
        "GRPC_PORT": str(port),
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
    }
    return Service("sentiment", [sys.executable, "-m", "services.sentiment", "consume"], env,
                   log_dir / "sentiment.log",
                   ready=lambda s: _serving(f"127.0.0.1:{port}"))  # fmt: skip


def recommender_service(infra: Infra, names: StackNames, log_dir: Path, model_dir: Path,
                        port: int, workers: int = 1) -> Service:  # fmt: skip
    env = base_env(infra, names) | {
        "RECSYS_MODEL_DIR": str(model_dir),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "WORKERS": str(workers),
        "GRACE_S": "2",
        "RELOAD_INTERVAL_S": "0",
    }
    target = f"127.0.0.1:{port}"
    return Service("recommender", [sys.executable, "-m", "services.recommender"], env,
                   log_dir / "recommender.log",
                   ready=lambda s: _serving(target))  # fmt: skip


def _serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1)  # fmt: skip
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


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
                try:
                    stub.Recommend(request, timeout=self.deadline_s)
                    code = "OK"
                except grpc.RpcError as exc:
                    status = exc.code() if hasattr(exc, "code") else None
                    code = status.name if status is not None else "UNKNOWN"
                self.calls.append(CallRecord(time.monotonic(), code, failing))
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
