"""Fault-injection suite: kill or restart one part of the running pipeline, check nothing is lost.

Every case runs the whole pipeline (real Apache Kafka, real redis-server with its append-only
file on, the events, sentiment and recommender services as subprocesses) while a MovieLens
slice and a fixed set of CRM feedback records are produced at full speed and a gRPC client
calls Recommend in a loop. When a third of the stream has been handled, the case injects its
fault; then it waits until both consumer groups have no lag and the counters stop moving,
and checks:

- the Redis click-event features equal an independent computation from the records and the
  fault-free run's (``events_lost`` / ``events_double_counted`` from the per-type counters);
- every feedback record came out scored (by ``feedback_id``; duplicates are counted: the
  output is at-least-once), the suppression sets equal the fault-free run's;
- the gRPC client saw only OK and UNAVAILABLE, and succeeded again after the outage.

The sentiment averages equal the fault-free run's too: each feedback id is folded in once
(docs/sentiment.md), so a record replayed after a crash changes nothing.
``sentiment_refolded`` counts extra folds the averages hold (0 when the dedup works).

    python -m bench.faults [--quick] [--case NAME ...] [--json-out FILE]

Ends with one JSON line: {"cases", "passed", "events_lost", "events_double_counted", ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.system_common import (
    ClientLoop,
    Infra,
    Producer,
    StackNames,
    Workload,
    applied_events,
    events_service,
    group_lag,
    infrastructure,
    log,
    make_topics,
    read_topic,
    recommender_model,
    recommender_service,
    rss_mb,
    sentiment_model,
    sentiment_service,
    workload,
)
from recsys_tools.harness import Service, free_port, wait_for, wait_serving
from recsys_tools.harness.features import compare_features, expected_event_features, normalised_dump

CASES: dict[str, str] = {
    "none": "no fault (the reference run)",
    "events_kill": "SIGKILL the events service, start it again (same group)",
    "sentiment_kill": "SIGKILL the sentiment consumer, start it again (same group)",
    "recommender_kill": "SIGKILL the recommender, start it again on the same port",
    "redis_restart": "stop redis-server (SIGTERM, AOF on) for 2 s, start it on the same dir",
    "kafka_restart": "stop the Kafka broker (SIGTERM) for 2 s, start it on the same data dir",
    "kafka_leader_kill": "3-broker KRaft cluster (RF 3, min ISR 2): kill -9 the broker leading "
    "every click partition; it stays down",
    "redis_primary_kill": "Redis primary + replica behind Sentinel: cut the replication link "
    "1.5 s, kill -9 the primary, Sentinel promotes the replica; run without and with "
    "REDIS_WAIT_REPLICAS=1",
    "redis_latency": "TCP proxy between the recommender and Redis: +300 ms each way for 6 s, "
    "then a 6 s partition (black hole), then healed",
}
ALLOWED_CODES = {"OK", "UNAVAILABLE"}
#: Node losses and network faults: a call may also run into its deadline.
NODE_CASES = ("kafka_leader_kill", "redis_primary_kill", "redis_latency")
NODE_ALLOWED_CODES = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
#: How long (at least) redis_primary_kill keeps the replication link cut before it kills
#: the primary (cut when a third of the stream is applied):
#: every write the primary acknowledges in that window is on the primary alone, so the run
#: without WAIT loses what it applied and committed then, by design (docs/faults.md).
#: (Freezing the replica with SIGSTOP did not: the stream waited in its socket buffer.)
REPLICATION_CUT_S = 1.5


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    #: informational checks are reported but do not fail the case
    informational: bool = False


@dataclass
class CaseResult:
    case: str
    fault: str
    checks: list[Check] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks if not c.informational)

    def check(self, name: str, ok: bool, detail: str, informational: bool = False) -> None:
        self.checks.append(Check(name, ok, detail, informational))

    def report(self) -> str:
        lines = [f"== {self.case}: {'PASS' if self.passed else 'FAIL'} ({self.seconds:.0f} s) "
                 f"- {self.fault}"]  # fmt: skip
        if self.error:
            lines.append(f"   error: {self.error}")
        for c in self.checks:
            mark = "ok  " if c.ok else ("info" if c.informational else "FAIL")
            lines.append(f"   [{mark}] {c.name}: {c.detail}")
        lines.append(f"   counts: {json.dumps(self.counts, sort_keys=True)}")
        return "\n".join(lines)


@dataclass
class Suite:
    infra: Infra
    work_dir: Path
    load: Workload
    recommender_model: Path
    sentiment_model: Path
    baseline: dict[str, Any] | None = None
    drain_timeout_s: float = 240.0


# ------------------------------------------------------------------------------ faults
def _restart_service(svc: Service) -> Callable[[], None]:
    def inject() -> None:
        svc.kill()
        svc.start()
        wait_serving(svc, 120)

    return inject


def _restart_recommender(svc: Service) -> Callable[[], None]:
    def inject() -> None:
        svc.kill()
        time.sleep(1.0)  # a window clients must ride out
        svc.start()
        wait_serving(svc, 120)

    return inject


def _restart_redis(infra: Infra) -> Callable[[], None]:
    def inject() -> None:
        infra.redis.stop()
        time.sleep(2.0)
        infra.redis.start()

    return inject


def _restart_kafka(infra: Infra) -> Callable[[], None]:
    def inject() -> None:
        server = infra.kafka.server
        assert server is not None, "the broker must be ours to restart"
        server.stop()
        time.sleep(2.0)
        server.start()

    return inject


# ---------------------------------------------------------------------- node-loss cases
def _applied(suite: Suite, names: StackNames) -> int | None:
    from recsys.redis_io import make_redis

    try:
        client = make_redis(suite.infra.redis_url, check=False, timeout_s=1.0)
        try:
            return applied_events(client, names.prefix)
        finally:
            client.close()
    except Exception:
        return None  # Redis unreachable right now


def _resumed_after(
    suite: Suite, names: StackNames, since: float, timeout_s: float = 60.0
) -> float | None:
    """Seconds from ``since`` until the applied-events counter moves again (the events
    pipeline's outage as its output shows it); None when it did not move within
    ``timeout_s`` (the rest of the stream was applied before the fault, or, without
    REDIS_WAIT_REPLICAS, applied, committed and lost with the primary)."""
    start = _applied(suite, names)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _applied(suite, names)
        if now is not None and (start is None or now > start):
            return round(time.monotonic() - since, 2)
        if start is None:
            start = now
        time.sleep(0.05)
    return None


def _kafka_leader_kill(suite: Suite) -> CaseResult:
    from recsys_tools.infra.kafka_cluster import KafkaCluster

    with KafkaCluster(suite.work_dir / f"kafka-cluster-{int(time.time())}") as cluster:
        log(f"kafka: {cluster.description} at {cluster.bootstrap}")
        infra = Infra(cluster.endpoint(), suite.infra.redis, suite.work_dir)
        sub = dataclasses.replace(suite, infra=infra)
        leader = 1

        def before_start(names: StackNames) -> None:
            # RF 3 everywhere; node 1 leads every click partition, so killing it takes
            # the whole click topic's leadership away at once.
            cluster.create_topic(names.events_topic, 3, leader=leader)
            for topic, parts in (
                (f"{names.events_topic}.dlq", 1),
                (names.feedback_topic, 2),
                (names.scored_topic, 1),
                (f"{names.feedback_topic}.dlq", 1),
            ):
                cluster.create_topic(topic, parts)  # fmt: skip

        def inject(result: CaseResult, names: StackNames) -> None:
            leaders = cluster.leaders(names.events_topic)
            result.counts["click_partition_leaders_before"] = leaders
            victim = max(set(leaders.values()), key=list(leaders.values()).count)
            t0 = time.monotonic()
            cluster.node(victim).kill()
            after = cluster.wait_leaders(names.events_topic, len(leaders), avoid=victim)
            moved_s = round(time.monotonic() - t0, 2)
            resumed_s = _resumed_after(sub, names, t0)
            result.counts["click_partition_leaders_after"] = after
            result.counts["unavailability"] = {
                "killed_broker": victim, "leader_moved_after_s": moved_s,
                "events_applied_again_after_s": resumed_s,
            }  # fmt: skip
            log(f"kafka_leader_kill: broker {victim} killed; leaders {leaders} -> {after} in "
                f"{moved_s} s, events applied again after {resumed_s} s")  # fmt: skip

        return _run_stack(sub, "kafka_leader_kill", NodeFault(inject, before_start))


def _redis_primary_kill(suite: Suite) -> CaseResult:
    """Twice on a fresh primary + replica + Sentinel: without WAIT (informational: shows
    what asynchronous replication loses), then with REDIS_WAIT_REPLICAS=1 (checked)."""
    without = _primary_kill_run(suite, wait=False)
    result = _primary_kill_run(suite, wait=True)
    lost = without.counts.get("events_lost")
    result.counts["without_wait"] = {
        k: without.counts.get(k)
        for k in ("events_lost", "events_double_counted", "feedback_lost", "unavailability")
    }
    result.counts["without_wait"]["failed_checks"] = [
        c.name for c in without.checks if not c.ok and not c.informational
    ]
    result.check("without WAIT (REDIS_WAIT_REPLICAS=0), for comparison", True,
                 f"{lost} events lost, checks failed: "
                 f"{result.counts['without_wait']['failed_checks'] or 'none'}"
                 + (f"; error {without.error}" if without.error else ""),
                 informational=True)  # fmt: skip
    return result


def _primary_kill_run(suite: Suite, *, wait: bool) -> CaseResult:
    from recsys_tools.infra.redis_sentinel import RedisSentinelSet

    work = suite.work_dir / f"redis-sentinel-{'wait' if wait else 'nowait'}-{int(time.time())}"
    # The replica replicates through a loopback proxy: cutting it stops the stream itself.
    with RedisSentinelSet(work, replication_proxy=True) as rs:
        log(f"redis: {rs.description} at {rs.url} (REDIS_WAIT_REPLICAS={int(wait)})")
        infra = Infra(suite.infra.kafka, rs, suite.work_dir)
        sub = dataclasses.replace(suite, infra=infra)
        env = {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "500"} if wait else {}

        cutter = _ReplicationCutter(rs, len(suite.load.events) // 3)

        def inject(result: CaseResult, names: StackNames) -> None:
            if not cutter.cut.wait(120) or cutter.error:
                raise RuntimeError(f"the replication link was not cut: {cutter.error}")
            # Cut at a third of the stream; the events service went on at full speed, and
            # what it applied since is on the primary alone.
            time.sleep(max(0.0, cutter.cut_at + REPLICATION_CUT_S - time.monotonic()))
            at_kill = _applied(sub, names)
            old = rs.current_primary_port()
            t0 = time.monotonic()
            killed = rs.kill_primary()
            cut_s = round(t0 - cutter.cut_at, 2)
            failover_s = round(rs.wait_failover(old), 2)
            rs.heal_replication()  # drops the starved connections; nothing replicates there now
            # The lost node comes back empty and Sentinel makes it the new primary's
            # replica, so REDIS_WAIT_REPLICAS=1 can be met again.
            killed.start()
            resumed_s = _resumed_after(sub, names, t0)
            result.counts["unavailability"] = {
                "replication_cut_s": cut_s, "failover_after_s": failover_s,
                "events_applied_again_after_s": resumed_s,
                # the applied-events counter on the primary at the cut and at the kill:
                # what the run without WAIT stands to lose (with WAIT: applied, not
                # committed, applied again after the failover)
                "applied_at_cut": cutter.applied_at_cut, "applied_at_kill": at_kill,
            }  # fmt: skip
            log(f"redis_primary_kill: link cut at {cutter.applied_at_cut} applied, primary "
                f":{old} killed at {at_kill}, failover in {failover_s} s, events applied "
                f"again after {resumed_s} s")  # fmt: skip

        def before_start(names: StackNames) -> None:
            cutter.prefix = names.prefix
            cutter.start()

        fault = NodeFault(inject, before_start, events_env=env, sentiment_env=env)
        try:
            result = _run_stack(sub, "redis_primary_kill", fault)
        finally:
            cutter.stop_event.set()
        result.counts["redis_wait_replicas"] = int(wait)
        return result


class _ReplicationCutter(threading.Thread):
    """Cuts ``rs``'s replication link the moment the primary's applied-events counter
    reaches ``at``: polled every 20 ms on the primary itself, so the cut lands while the
    stream is flowing (the case's own fault hook comes later: it first reads the scored
    topic, by when a quick stream may be over)."""

    def __init__(self, rs: Any, at: int) -> None:  # rs: a RedisSentinelSet
        super().__init__(daemon=True, name="replication-cutter")
        self.rs, self.at = rs, at
        self.prefix = ""
        self.cut = threading.Event()
        self.stop_event = threading.Event()
        self.cut_at = 0.0
        self.applied_at_cut: int | None = None
        self.error: str | None = None

    def run(self) -> None:
        from recsys.redis_io import make_redis

        client = make_redis(f"redis://127.0.0.1:{self.rs.primary.port}/0", check=False)
        try:
            while not self.stop_event.wait(0.02):
                try:
                    applied = applied_events(client, self.prefix)
                except Exception:
                    continue  # not up yet
                if applied >= self.at:
                    try:
                        self.rs.cut_replication()  # writes now land on the primary only
                    except Exception as exc:
                        self.error = f"{type(exc).__name__}: {exc}"
                    self.cut_at, self.applied_at_cut = time.monotonic(), applied
                    self.cut.set()
                    return
        finally:
            client.close()


def _redis_latency(suite: Suite) -> CaseResult:
    from recsys_tools.infra.tcp_proxy import TcpProxy

    redis_port = int(suite.infra.redis.port)
    with TcpProxy(("127.0.0.1", redis_port)) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"

        def inject(result: CaseResult, names: StackNames) -> None:
            marks: dict[str, float] = {}
            t0 = time.monotonic()
            proxy.set_mode("delay", delay_s=0.3)
            time.sleep(6.0)
            marks["latency_end"] = time.monotonic() - t0
            proxy.set_mode("partition")
            time.sleep(6.0)
            marks["partition_end"] = time.monotonic() - t0
            proxy.set_mode("pass")
            result.counts["unavailability"] = {
                "latency_s": 6.0, "added_latency_each_way_s": 0.3, "partition_s": 6.0,
            }  # fmt: skip
            result.counts["fault_marks_s"] = {k: round(v, 2) for k, v in marks.items()}

        fault = NodeFault(inject, recommender_env={"REDIS_URL": url})
        result = _run_stack(suite, "redis_latency", fault)
    codes = result.counts.get("grpc", {}).get("codes", {})
    window = result.counts.get("unavailability", {})
    result.check("answers within their deadline, degraded during the fault",
                 set(codes) == {"OK"} and window.get("grpc_degraded_answers", 0) > 0,
                 f"codes {codes}, {window.get('grpc_degraded_answers', 0)} degraded answers, "
                 f"longest {window.get('grpc_max_ok_latency_s')} s")  # fmt: skip
    return result


# ------------------------------------------------------------------------------- a case
def run_case(suite: Suite, case: str) -> CaseResult:
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; one of {', '.join(CASES)}")
    if case == "kafka_leader_kill":
        return _kafka_leader_kill(suite)
    if case == "redis_primary_kill":
        return _redis_primary_kill(suite)
    if case == "redis_latency":
        return _redis_latency(suite)
    return _run_stack(suite, case)


@dataclass
class NodeFault:
    """What a node-loss case adds to a plain run: its own infrastructure's hooks."""

    inject: Callable[[CaseResult, StackNames], None]
    before_start: Callable[[StackNames], None] | None = None
    events_env: dict[str, str] = field(default_factory=dict)
    sentiment_env: dict[str, str] = field(default_factory=dict)
    recommender_env: dict[str, str] = field(default_factory=dict)


def _run_stack(suite: Suite, case: str, node: NodeFault | None = None) -> CaseResult:
    result = CaseResult(case, CASES[case])
    started = time.monotonic()
    names = StackNames.for_run(f"{case.replace('_', '-')}-{int(time.time() * 1000) % 10**8}")
    log_dir = suite.work_dir / case
    log_dir.mkdir(parents=True, exist_ok=True)
    infra = suite.infra
    if node is not None and node.before_start is not None:
        node.before_start(names)
    make_topics(infra, names)
    events = events_service(infra, names, log_dir, 0, **(node.events_env if node else {}))
    # Small micro-batches: the quick workload is otherwise scored in well under a second,
    # so the sentiment kill would land after the stream instead of in the middle of it.
    sentiment = sentiment_service(infra, names, log_dir, suite.sentiment_model,
                                  SENTIMENT_MAX_POLL_RECORDS="8",
                                  **(node.sentiment_env if node else {}))  # fmt: skip
    port = free_port()
    rec = recommender_service(infra, names, log_dir, suite.recommender_model, port, 1,
                              **(node.recommender_env if node else {}))  # fmt: skip
    services = [events, sentiment, rec]
    users = sorted({e.user_id for e in suite.load.events})[:200]
    client = ClientLoop(f"127.0.0.1:{port}", users)
    producers: list[Producer] = []
    watchdog: Watchdog | None = None
    try:
        for svc in services:
            svc.start()
        for svc in services:
            wait_serving(svc, 180)
        client.start()
        watchdog = Watchdog(suite, names, events, sentiment)
        watchdog.start()
        producers = [Producer(infra.bootstrap, names.events_topic, suite.load.events),
                     Producer(infra.bootstrap, names.feedback_topic, suite.load.feedback,
                              chunk=100)]  # fmt: skip
        t_stream = time.monotonic()
        for p in producers:
            p.start()
        _inject(suite, case, result, names, events, sentiment, rec, node)
        drain_s = _drain(suite, names, producers)
        time.sleep(1.0)  # a few calls after the pipeline settled
        result.counts["stream_s"] = round(time.monotonic() - t_stream, 1)
        result.counts["drain_after_fault_s"] = drain_s
        result.counts["rss_mb"] = {s.name: round(rss_mb(s.pid), 1) for s in services}
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        for svc in services:
            log(f"{svc.name} log tail:\n{svc.log_text()[-1500:]}")
    finally:
        if watchdog is not None:
            watchdog.stop_event.set()
            watchdog.join(10)
            result.counts["stall_restarts"] = dict(watchdog.restarts)
        client.stop_event.set()
        if client.is_alive():  # a start-up failure leaves it unstarted: join() would raise
            client.join(10)
        for p in producers:
            p.stop_event.set()
        exits = {svc.name: svc.stop(timeout_s=30) for svc in services}
        result.counts["exit_codes_on_sigterm"] = exits
    stalls = result.counts.get("stall_restarts", {})
    result.check(
        "no consumer stalled",
        not stalls,
        f"restarted after {STALL_S:.0f} s without progress: {stalls or 'none'}",
    )
    if result.error is None:
        _verify(suite, case, result, names, client, producers)
        result.check("graceful shutdown", all(code == 0 for code in exits.values()),
                     f"exit codes after SIGTERM {exits}")  # fmt: skip
    result.seconds = time.monotonic() - started
    return result


STALL_S = 45.0


class Watchdog(threading.Thread):
    """Restarts a consumer that makes no progress for STALL_S while work is pending.

    A stall is a liveness bug of the service (or its Kafka client), not a fault this suite
    injects: it fails the case, but the restart lets the remaining checks still say whether
    anything was lost.
    """

    def __init__(self, suite: Suite, names: StackNames, events: Service,
                 sentiment: Service) -> None:  # fmt: skip
        super().__init__(daemon=True, name="watchdog")
        self.suite, self.names = suite, names
        self.services = {"events": events, "sentiment": sentiment}
        self.stop_event = threading.Event()
        self.restarts: dict[str, int] = defaultdict(int)

    def _progress(self) -> dict[str, tuple[int, int]]:
        """(done, total) per consumer."""
        from recsys.redis_io import make_redis

        client = make_redis(self.suite.infra.redis_url)
        try:
            applied = applied_events(client, self.names.prefix)
        finally:
            client.close()
        scored = _scored_count(self.suite.infra.bootstrap, self.names)
        return {"events": (applied, len(self.suite.load.events)),
                "sentiment": (scored, len(self.suite.load.feedback))}  # fmt: skip

    def run(self) -> None:
        last: dict[str, int] = {}
        since: dict[str, float] = {}
        while not self.stop_event.wait(1.0):
            try:
                progress = self._progress()
            except Exception:
                continue  # Redis or Kafka is down right now (a fault): not a stall
            now = time.monotonic()
            for name, (done, total) in progress.items():
                if done != last.get(name) or done >= total:
                    last[name], since[name] = done, now
                elif now - since[name] > STALL_S:
                    svc = self.services[name]
                    log(f"{name} made no progress for {STALL_S:.0f} s at {done}/{total}; "
                        f"restarting it")  # fmt: skip
                    self.restarts[name] += 1
                    svc.stop(timeout_s=10)
                    # started from this thread, so its parent-death signal (SIGTERM) comes
                    # when the watchdog ends: just before the case stops every service anyway
                    with contextlib.suppress(Exception):
                        svc.start()
                        wait_serving(svc, 180)
                    since[name] = time.monotonic()


def _inject(suite: Suite, case: str, result: CaseResult, names: StackNames, events: Service,
            sentiment: Service, rec: Service, node: NodeFault | None = None) -> None:  # fmt: skip
    """Wait until a third of the stream is handled, then inject the case's fault."""
    from recsys.redis_io import make_redis

    infra = suite.infra
    n_ev, n_fb = len(suite.load.events), len(suite.load.feedback)
    client = make_redis(infra.redis_url)
    try:
        if case == "sentiment_kill":
            wait_for(lambda: _scored_count(infra.bootstrap, names) >= n_fb // 3, 120,
                     "a third of the feedback scored", poll_s=0.05)  # fmt: skip
        else:
            wait_for(lambda: applied_events(client, names.prefix) >= n_ev // 3, 120,
                     "a third of the events applied", poll_s=0.05)  # fmt: skip
        at_fault = {"events_applied": applied_events(client, names.prefix),
                    "feedback_scored": _scored_count(infra.bootstrap, names)}  # fmt: skip
    finally:
        client.close()
    result.counts["at_fault"] = at_fault
    inject: Callable[[], None] | None = {
        "none": None,
        "events_kill": _restart_service(events),
        "sentiment_kill": _restart_service(sentiment),
        "recommender_kill": _restart_recommender(rec),
        "redis_restart": _restart_redis(infra),
        "kafka_restart": _restart_kafka(infra),
    }.get(case)
    if node is not None:
        inject = functools.partial(node.inject, result, names)
    if inject is None:
        return
    t0 = time.monotonic()
    inject()
    result.counts["fault_s"] = round(time.monotonic() - t0, 2)
    log(f"{case}: fault injected at {at_fault}, back after {result.counts['fault_s']} s")
    interrupted = (at_fault["feedback_scored"] < n_fb if case == "sentiment_kill"
                   else at_fault["events_applied"] < n_ev)  # fmt: skip
    result.check("fault landed mid-stream", interrupted,
                 f"at the fault {at_fault} of {n_ev} events / {n_fb} feedback")  # fmt: skip


def _scored_count(bootstrap: str, names: StackNames) -> int:
    """Records on the scored topic (its end offsets: no consumer group needed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        parts = consumer.partitions_for_topic(names.scored_topic) or set()
        ends = consumer.end_offsets([TopicPartition(names.scored_topic, p) for p in parts])
        return int(sum(ends.values()))
    finally:
        consumer.close()


def _drain(suite: Suite, names: StackNames, producers: list[Producer]) -> float:
    """Until the producers are done, both groups have lag 0 and the counters hold still."""
    from recsys.redis_io import make_redis

    t0 = time.monotonic()
    deadline = t0 + suite.drain_timeout_s
    for p in producers:
        p.join(max(1.0, deadline - time.monotonic()))
        if p.is_alive() or p.error is not None:
            raise RuntimeError(f"producer to {p.topic} did not finish: {p.error!r}")
    client = make_redis(suite.infra.redis_url)
    last: tuple[int, int] | None = None
    stable_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            try:
                now = (applied_events(client, names.prefix),
                       _scored_count(suite.infra.bootstrap, names))  # fmt: skip
            except Exception:
                time.sleep(0.5)
                continue
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= 2.0:
                lags = (group_lag(suite.infra.bootstrap, names.events_group, names.events_topic),
                        group_lag(suite.infra.bootstrap, names.sentiment_group,
                                  names.feedback_topic))  # fmt: skip
                if lags == (0, 0):
                    return round(time.monotonic() - t0, 1)
            time.sleep(0.5)
    finally:
        client.close()
    raise TimeoutError(f"pipeline did not drain within {suite.drain_timeout_s:.0f} s "
                       f"(applied, scored) = {last}")  # fmt: skip


# --------------------------------------------------------------------------- the checks
def _split(dump: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(click-event features, suppression sets, sentiment averages) of a normalised dump."""
    sup = {k: v for k, v in dump.items() if k.endswith(":suppressed")}
    sen = {k: v for k, v in dump.items() if k.endswith(":sentiment")}
    ev = {k: v for k, v in dump.items() if k not in sup and k not in sen}
    return ev, sup, sen


def _verify(suite: Suite, case: str, result: CaseResult, names: StackNames,
            client: ClientLoop, producers: list[Producer]) -> None:  # fmt: skip
    from recsys.feedback.v1 import feedback_pb2
    from recsys.kafka_codec import decode
    from recsys.redis_io import make_redis

    rc = make_redis(suite.infra.redis_url)
    try:
        dump = normalised_dump(rc, names.prefix)
        keys = list(rc.scan_iter(match=f"{names.prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):  # keep the server small for the next case
            rc.delete(*keys[start : start + 1000])
    finally:
        rc.close()
    ev, sup, sen = _split(dump)
    expected = expected_event_features(suite.load.events, "P")
    # events: per-type counters against the records
    from recsys.store import KeySchema

    counters_key = KeySchema("P").counters()
    want: dict[str, int] = expected.get(counters_key, {})
    got: dict[str, int] = ev.get(counters_key, {})
    lost = sum(max(0, n - got.get(t, 0)) for t, n in want.items())
    double = sum(max(0, n - want.get(t, 0)) for t, n in got.items())
    result.counts.update(events=len(suite.load.events), events_applied=sum(got.values()),
                         events_lost=lost, events_double_counted=double,
                         resent_chunks=sum(p.resent_chunks for p in producers))  # fmt: skip
    result.check("no event lost or double-counted", lost == 0 and double == 0,
                 f"applied {sum(got.values())} of {len(suite.load.events)} "
                 f"(lost {lost}, double-counted {double})")  # fmt: skip
    diffs = compare_features(ev, expected)
    result.check("event features = independent computation", not diffs,
                 f"{len(ev)} keys compared" + (f"; {len(diffs)} differ, e.g. {diffs[:3]}"
                                               if diffs else ""))  # fmt: skip
    # feedback: the scored output topic
    out = read_topic(suite.infra.bootstrap, names.scored_topic)
    ids = [decode(r.value, r.headers, feedback_pb2.ScoredFeedback).feedback.feedback_id
           for r in out]  # fmt: skip
    want_ids = {f.feedback_id for f in suite.load.feedback}
    missing = want_ids - set(ids)
    dup = len(ids) - len(set(ids))
    result.counts.update(feedback=len(want_ids), scored_records=len(ids),
                         feedback_lost=len(missing), feedback_duplicates=dup)  # fmt: skip
    result.check("no scored feedback lost", not missing,
                 f"{len(set(ids))} distinct of {len(want_ids)} scored, {dup} duplicate records"
                 + (f"; missing e.g. {sorted(missing)[:3]}" if missing else ""))  # fmt: skip
    # the fault-free run
    if case == "none" or suite.baseline is None:
        suite.baseline = dump if case == "none" else suite.baseline
        result.check("reference run recorded", case == "none",
                     f"{len(dump)} keys: {len(ev)} event, {len(sup)} suppression, "
                     f"{len(sen)} sentiment")  # fmt: skip
    else:
        b_ev, b_sup, b_sen = _split(suite.baseline)
        d_ev = compare_features(ev, b_ev)
        d_sup = compare_features(sup, b_sup)
        result.check("Redis features = fault-free run", not d_ev and not d_sup,
                     f"{len(ev)} event keys, {len(sup)} suppression sets compared"
                     + (f"; differ: {(d_ev + d_sup)[:3]}" if d_ev or d_sup else ""))  # fmt: skip
        refold = 0.0
        off = []
        for key, value in sen.items():
            base = b_sen.get(key, {"n": 0.0, "avg": float("nan")})
            refold += value["n"] - base["n"]
            # n depends on the feedback times alone; avg also on the scores, which move in
            # the 6th decimal with the micro-batch a text was classified in (padding)
            if abs(value["n"] - base["n"]) > 1e-6 or not abs(value["avg"] - base["avg"]) <= 1e-3:
                off.append(key)
        same_users = sen.keys() == b_sen.keys()
        result.counts["sentiment_refolded"] = round(refold)
        result.check("sentiment averages = fault-free run", same_users and not off,
                     f"{len(sen)} users compared; {round(refold)} records folded in twice"
                     + (f"; differ: {off[:3]}" if off else ""))  # fmt: skip
    # gRPC
    summary = client.summary()
    result.counts["grpc"] = summary
    codes = set(summary["codes"])
    ok_after = any(c.code == "OK" for c in client.calls[-5:])
    allowed = NODE_ALLOWED_CODES if case in NODE_CASES else ALLOWED_CODES
    result.check(f"gRPC clients saw only {'/'.join(sorted(allowed - {'OK'}))}, then succeeded",
                 codes <= allowed and summary["recovered"] and ok_after
                 and summary["codes"].get("OK", 0) > 0,
                 f"{summary['calls']} calls, codes {summary['codes']}, outage window "
                 f"{summary['outage_window_s']} s")  # fmt: skip
    if case in NODE_CASES:
        calls = client.calls
        ok = [c for c in calls if c.code == "OK"]
        window = result.counts.setdefault("unavailability", {})
        window.update(
            grpc_non_ok_window_s=summary["outage_window_s"],
            grpc_non_ok_calls=sum(c.code != "OK" for c in calls),
            grpc_max_ok_latency_s=round(max((c.latency_s for c in ok), default=0.0), 3),
            grpc_degraded_answers=sum(c.degraded for c in ok),
        )
        result.check("recommendations kept flowing", bool(ok) and summary["recovered"],
                     f"{len(ok)} OK answers ({window['grpc_degraded_answers']} degraded), "
                     f"longest {window['grpc_max_ok_latency_s']} s")  # fmt: skip
    if case == "recommender_kill":
        result.check("the outage was visible to the client",
                     summary["codes"].get("UNAVAILABLE", 0) > 0,
                     f"{summary['codes'].get('UNAVAILABLE', 0)} UNAVAILABLE answers")  # fmt: skip


# ------------------------------------------------------------------------------- driver
def sizes(quick: bool) -> tuple[int, int]:
    """(events, feedback records) per case."""
    return (6000, 600) if quick else (20000, 3000)


@contextlib.contextmanager
def suite_context(work_dir: Path, quick: bool) -> Any:
    n_events, n_feedback = sizes(quick)
    t0 = time.monotonic()
    rec_model = recommender_model(work_dir)
    sent_model = sentiment_model(work_dir)
    load = workload(n_events, n_feedback, anchor=time.time() - 120)
    log(f"models and workload ready in {time.monotonic() - t0:.0f} s "
        f"({n_events} events, {n_feedback} feedback records)")  # fmt: skip
    with infrastructure(work_dir) as infra:
        yield Suite(infra, work_dir, load, rec_model, sent_model)


def summarise(results: list[CaseResult], seconds: float) -> dict[str, Any]:
    def total(key: str) -> int:
        return int(sum(r.counts.get(key, 0) for r in results))

    grpc_bad: dict[str, int] = defaultdict(int)
    for r in results:
        for code, n in r.counts.get("grpc", {}).get("codes", {}).items():
            if code not in (NODE_ALLOWED_CODES if r.case in NODE_CASES else ALLOWED_CODES):
                grpc_bad[code] += n
    return {
        "cases": len(results),
        "passed": sum(r.passed for r in results),
        "events_lost": total("events_lost"),
        "events_double_counted": total("events_double_counted"),
        "feedback_lost": total("feedback_lost"),
        "feedback_duplicates": total("feedback_duplicates"),
        "sentiment_refolded": total("sentiment_refolded"),
        "grpc_errors_other_than_unavailable": sum(grpc_bad.values()),
        # Node-loss cases: how long each was unavailable, as its clients and consumers saw it.
        "unavailability": {
            r.case: r.counts["unavailability"] for r in results if "unavailability" in r.counts
        },
        # redis_primary_kill's informational run without WAIT: what it lost.
        "without_wait": {
            r.case: r.counts["without_wait"] for r in results if "without_wait" in r.counts
        },
        "failed_cases": [r.case for r in results if not r.passed],
        "events_per_case": results[0].counts.get("events") if results else None,
        "feedback_per_case": results[0].counts.get("feedback") if results else None,
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="6000 events and 600 feedback records per case (CI)")  # fmt: skip
    parser.add_argument(
        "--case",
        action="append",
        choices=list(CASES),
        help="run only these cases (the reference run always runs first); without it, every "
        f"case but the slow node-loss ones ({', '.join(NODE_CASES)})",
    )
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    # The node-loss cases are slow (infrastructure of their own): only when named.
    default = [c for c in CASES if c != "none" and c not in NODE_CASES]
    cases = ["none", *([c for c in CASES if c in args.case] if args.case else default)]
    t0 = time.monotonic()
    results: list[CaseResult] = []
    tmp = tempfile.mkdtemp(prefix="recsys-faults-")
    work = Path(tmp)
    try:
        with suite_context(work, args.quick) as suite:
            for case in cases:
                log(f"case {case}: {CASES[case]}")
                result = run_case(suite, case)
                results.append(result)
                print(result.report(), flush=True)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
    summary = summarise(results, time.monotonic() - t0)
    if args.json_out:
        args.json_out.write_text(json.dumps({"summary": summary, "cases": [
            {"case": r.case, "fault": r.fault, "passed": r.passed, "error": r.error,
             "checks": [c.__dict__ for c in r.checks], "counts": r.counts} for r in results]},
            indent=2))  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0 if summary["passed"] == summary["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
