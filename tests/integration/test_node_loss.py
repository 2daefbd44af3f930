"""The infrastructure of the node-loss fault cases, on real servers (docs/faults.md).

- a Redis primary + replica behind a Sentinel: a store opened on its ``redis+sentinel://``
  URL follows the failover after the primary is killed, with the key schema unchanged;
- ``REDIS_WAIT_REPLICAS``: the store's write batch carries ``WAIT`` on its own connection,
  so a batch whose replica does not acknowledge fails instead of returning (and the events
  service does not commit it); without the setting the same batch returns at once;
- a replica replicating through a TCP proxy (``redis_primary_kill``): with the link cut,
  a write the primary acknowledged without WAIT is gone after the failover, the same write
  with WAIT fails instead, and the Sentinel still promotes the replica;
- the TCP proxy the ``redis_latency`` case puts between the recommender and Redis adds
  latency and black-holes traffic;
- (slow) a three-broker Apache Kafka KRaft cluster loses the node that leads every
  partition of a topic, and nothing written with ``acks=all`` is lost.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.redis_io import make_redis
from recsys.store import FeatureEvent, StoreUnavailableError, open_store
from recsys_tools.infra.redis_sentinel import RedisSentinelSet
from recsys_tools.infra.redis_server import RedisServer
from recsys_tools.infra.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def _events(n: int, start: int = 0) -> list[FeatureEvent]:
    now = time.time()
    return [
        FeatureEvent(f"e{i}", f"u{i % 5}", f"i{i % 7}", "click", 1.0, now)
        for i in range(start, start + n)
    ]


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    with RedisSentinelSet(tmp_path / "rs") as started:
        yield started


def _apply_until_ok(store: object, events: list[FeatureEvent], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            store.apply_events(events)  # type: ignore[attr-defined]
            return
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_store_follows_the_sentinel_failover(
    sentinel_set: RedisSentinelSet, key_prefix: str
) -> None:
    store = open_store(sentinel_set.url, prefix=key_prefix, timeout_s=1.0)
    try:
        first = _events(20)
        store.apply_events(first)
        assert store.get_serving_state("u0").weights  # read through the Sentinel's primary
        sentinel_set.wait_replicas(1, 10)  # the first batch is on the replica too
        old = sentinel_set.current_primary_port()
        sentinel_set.kill_primary()
        sentinel_set.wait_failover(old)
        assert sentinel_set.current_primary_port() != old
        _apply_until_ok(store, _events(10, start=20))
        # Same keys (schema untouched), now on the promoted replica: all 30 counted once.
        assert sum(store.counters().values()) == 30
        # The recommender's read path (its own per-thread connection) follows it too; a
        # read may fail while its old connection is found dead (the service answers
        # degraded then), the next ones reach the new primary.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert store.get_serving_state("u0").weights
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        again = store.apply_events(first)  # replayed: dedup survived the failover
        assert again.user_applied == 0
    finally:
        store.close()


def test_wait_replicas_blocks_a_batch_its_replica_did_not_get(
    sentinel_set: RedisSentinelSet, key_prefix: str
) -> None:
    waiting = open_store(sentinel_set.url, prefix=key_prefix, wait_replicas=1,
                         wait_timeout_ms=300, timeout_s=2.0)  # fmt: skip
    plain = open_store(sentinel_set.url, prefix=key_prefix + "-plain", timeout_s=2.0)
    replica_pid = sentinel_set.replica.pid
    assert replica_pid is not None
    try:
        _apply_until_ok(waiting, _events(5))  # the replica answers: WAIT is met
        os.kill(replica_pid, signal.SIGSTOP)
        try:
            plain.apply_events(_events(5))  # no WAIT: acknowledged by the primary alone
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="reached 0 of 1 replicas"):
                waiting.apply_events(_events(5, start=5))
            assert time.monotonic() - t0 >= 0.25  # it waited for the replica's ack
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        # Retried once the replica is back: applied (the first attempt's writes are on
        # the primary; the dedup makes the retry count them once).
        _apply_until_ok(waiting, _events(5, start=5))
        assert sum(waiting.counters().values()) == 10
    finally:
        waiting.close()
        plain.close()


def _wait_replica_caught_up(rs: RedisSentinelSet, timeout_s: float = 10.0) -> None:
    primary = make_redis(f"redis://127.0.0.1:{rs.primary.port}/0", timeout_s=1.0)
    replica = make_redis(f"redis://127.0.0.1:{rs.replica.port}/0", timeout_s=1.0)
    try:
        target = int(primary.info("replication")["master_repl_offset"])
        deadline = time.monotonic() + timeout_s
        while int(replica.info("replication")["slave_repl_offset"]) < target:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.05)
    finally:
        primary.close()
        replica.close()


def test_cut_replication_loses_unwaited_writes_at_failover(tmp_path: Path, key_prefix: str) -> None:
    with RedisSentinelSet(tmp_path / "rs", replication_proxy=True) as rs:
        waiting = open_store(rs.url, prefix=key_prefix, wait_replicas=1,
                             wait_timeout_ms=300, timeout_s=2.0)  # fmt: skip
        plain = open_store(rs.url, prefix=key_prefix + "-plain", timeout_s=2.0)
        try:
            _apply_until_ok(waiting, _events(5))  # through the proxy: WAIT is met
            plain.apply_events(_events(5))
            _wait_replica_caught_up(rs)  # the plain batch is on the replica too
            rs.cut_replication()
            plain.apply_events(_events(5, start=5))  # acknowledged by the primary alone
            with pytest.raises(StoreUnavailableError, match="reached 0 of 1 replicas"):
                waiting.apply_events(_events(5, start=5))
            old = rs.current_primary_port()
            rs.kill_primary()
            rs.wait_failover(old)  # the Sentinel reaches the replica without the proxy
            rs.heal_replication()
            assert rs.current_primary_port() == rs.replica.port
            deadline = time.monotonic() + 10
            while True:
                try:
                    counted = sum(plain.counters().values())
                    break
                except StoreUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert counted == 5  # the batch written during the cut is gone
            # The refused batch went with the primary too, but its caller was told (the
            # events service does not commit it and applies it again): only the first.
            assert sum(waiting.counters().values()) == 5
        finally:
            waiting.close()
            plain.close()


def test_wait_replicas_refused_where_it_cannot_hold() -> None:
    from recsys.errors import ConfigError
    from services.events.config import load_settings

    with pytest.raises(ConfigError, match="REDIS_CLUSTER"):
        load_settings({"REDIS_WAIT_REPLICAS": "1", "REDIS_CLUSTER": "true"})
    assert load_settings({}).redis_wait_replicas == 0  # default: no WAIT, as before


def test_tcp_proxy_adds_latency_and_partitions(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with TcpProxy(("127.0.0.1", server.port)) as proxy:
            client = make_redis(f"redis://127.0.0.1:{proxy.port}/0", timeout_s=1.0)
            t0 = time.monotonic()
            client.ping()
            plain_s = time.monotonic() - t0
            proxy.set_mode("delay", delay_s=0.2)
            t0 = time.monotonic()
            client.ping()
            assert time.monotonic() - t0 >= 0.4 > plain_s  # 0.2 s each way
            proxy.set_mode("partition")
            with pytest.raises(Exception, match=r"[Tt]imeout"):
                client.ping()
            proxy.set_mode("pass")
            deadline = time.monotonic() + 10
            while True:  # the starved connection was dropped: the client reconnects
                try:
                    assert client.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            client.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_kafka_cluster_survives_the_loss_of_the_leader(tmp_path: Path) -> None:
    from kafka import KafkaConsumer

    from recsys.kafka_io import make_producer
    from recsys_tools.infra.apache_kafka import preflight
    from recsys_tools.infra.kafka_cluster import KafkaCluster

    try:
        preflight()
    except Exception as exc:
        pytest.skip(f"no Apache Kafka here: {exc}")
    with KafkaCluster(tmp_path / "kafka") as cluster:
        cluster.create_topic("t", 3, leader=1)
        assert set(cluster.leaders("t").values()) == {1}
        producer = make_producer(cluster.bootstrap, linger_ms=0)
        assert producer.config["enable_idempotence"] and producer.config["acks"] == -1
        for i in range(300):
            producer.send("t", key=str(i % 7).encode(), value=str(i).encode())
            if i == 100:
                producer.flush(30)
                cluster.node(1).kill()  # kill -9, mid-stream
        producer.flush(60)
        producer.close(10)
        after = cluster.wait_leaders("t", 3, avoid=1)
        assert 1 not in after.values()
        consumer = KafkaConsumer(
            "t", bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest",
            consumer_timeout_ms=10_000, enable_auto_commit=False,
        )  # fmt: skip
        values = [int(r.value) for r in consumer]
        consumer.close()
        assert sorted(values) == list(range(300))  # none lost, none twice (idempotent)
