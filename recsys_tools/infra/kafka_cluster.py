"""A three-node Apache Kafka KRaft cluster on loopback, for losing a broker on purpose.

Each node is one :class:`~recsys_tools.infra.apache_kafka.ApacheKafka` process in combined
mode (broker and controller; the three form the controller quorum), formatted with one
shared cluster id. Durability is what a production cluster would run: replication factor 3
for every topic (the offsets topic included), ``min.insync.replicas`` 2 and no unclean
leader election, so an ``acks=all`` write survives the loss of any one node and a topic
keeps accepting writes with two of three. Broker sessions are short (3 s) so that the
controller moves leadership off a killed node within seconds rather than the default 9.

    with KafkaCluster(tmp_path) as cluster:
        cluster.create_topic("t", partitions=3, leader=1)  # node 1 leads every partition
        cluster.node(1).kill()                              # kill -9
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.errors import InfraError
from recsys_tools.harness import ManagedProcess, free_port
from recsys_tools.infra.apache_kafka import ApacheKafka, metadata_ready
from recsys_tools.infra.endpoints import KafkaEndpoint
from recsys_tools.infra.lifecycle import StartedOnEnter

NODES = 3


class ClusterNode(ApacheKafka):
    """One node of :class:`KafkaCluster`: ``voters`` is the whole quorum's address list."""

    def __init__(self, work_dir: Path, *, node_id: int, voters: str, controller_port: int,
                 heap: str) -> None:  # fmt: skip
        super().__init__(work_dir, controller_port=controller_port, heap=heap)
        self.node_id = node_id
        self.voters = voters

    #: False while the cluster starts its nodes together (see KafkaCluster.start).
    wait_on_start = True

    def _launch(self, proc: ManagedProcess, what: str) -> None:
        if self.wait_on_start:
            super()._launch(proc, what)
        else:
            self._proc = proc
            proc.start()

    def wait_ready(self) -> None:
        assert self._proc is not None
        try:
            self._proc.wait_ready(self._ready, timeout_s=self.start_timeout_s,
                                  what=f"metadata on {self.bootstrap}")  # fmt: skip
        except BaseException:
            self._proc.stop(timeout_s=5)
            raise

    def properties(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(NODES),
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(NODES),
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": str(NODES),
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": str(NODES),
            "share.coordinator.state.topic.min.isr": "2",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "5000",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())


class KafkaCluster(StartedOnEnter):
    """Three combined broker+controller nodes; ``bootstrap`` lists all of them."""

    kind = "apache"

    def __init__(self, work_dir: Path, *, heap: str = "384m") -> None:
        self.work_dir = work_dir.resolve()
        controller_ports = {i: free_port() for i in range(1, NODES + 1)}
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in controller_ports.items())
        self.nodes: dict[int, ClusterNode] = {
            i: ClusterNode(
                self.work_dir / f"node{i}",
                node_id=i,
                voters=voters,
                controller_port=controller_ports[i],
                heap=heap,
            )
            for i in range(1, NODES + 1)
        }
        self.version = self.nodes[1].version

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    @property
    def description(self) -> str:
        return f"Apache Kafka {self.version} (KRaft, {NODES} nodes, RF {NODES}, min ISR 2)"

    def endpoint(self) -> KafkaEndpoint:
        # server=None: a whole-cluster restart is not what a fault case does; it kills nodes.
        return KafkaEndpoint(self.bootstrap, "apache", self.description, {})

    def start(self, timeout_s: float = 180.0) -> None:
        """Format every node with one cluster id, start them together (a controller quorum
        needs a majority to elect a leader, so they cannot be started one by one)."""
        first = self.nodes[1]
        cluster_id = first.random_cluster_id()
        # Spawned from this thread (not one thread per node): a child gets SIGTERM when
        # the thread that started it ends (the harness's parent-death signal).
        for n in self.nodes.values():
            n.cluster_id = cluster_id
            n.start_timeout_s = timeout_s
            n.wait_on_start = False
            try:
                n.start()
            finally:
                n.wait_on_start = True
        for n in self.nodes.values():
            n.wait_ready()
        self.wait_brokers(NODES, timeout_s)

    def wait_brokers(self, n: int, timeout_s: float = 60.0) -> None:
        """Until the cluster metadata lists ``n`` live brokers."""
        deadline = time.monotonic() + timeout_s
        while len(self.live_brokers()) < n:
            if time.monotonic() > deadline:
                raise InfraError(f"fewer than {n} Kafka brokers registered in {timeout_s:.0f} s")
            time.sleep(0.2)

    def _admin(self) -> Any:
        from kafka.admin import KafkaAdminClient

        live = [n.bootstrap for n in self.nodes.values() if n.running()]
        return KafkaAdminClient(bootstrap_servers=live, client_id="recsys-cluster-admin",
                                request_timeout_ms=5000)  # fmt: skip

    def live_brokers(self) -> set[int]:
        """Node ids of the brokers the cluster metadata lists (registered and unfenced)."""
        from kafka import KafkaConsumer

        live = [n.bootstrap for n in self.nodes.values() if n.running()]
        try:
            consumer = KafkaConsumer(bootstrap_servers=live, client_id="recsys-cluster-probe",
                                     request_timeout_ms=5000)  # fmt: skip
        except Exception:
            return set()
        try:
            consumer.topics()  # a metadata request
            return {int(b.node_id) for b in consumer._client.cluster.brokers()}
        except Exception:
            return set()
        finally:
            consumer.close()

    def create_topic(self, name: str, partitions: int, *, leader: int | None = None,
                     configs: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """RF 3; with ``leader`` that node is the preferred (so the initial) leader of
        every partition, so killing it takes the leadership of the whole topic away."""
        from kafka.admin import NewTopic

        if leader is None:
            topic = NewTopic(name, partitions, NODES, topic_configs=dict(configs or {}))
        else:
            others = [i for i in self.nodes if i != leader]
            assignment = {p: [leader, *others[p % 2 :], *others[: p % 2]]
                          for p in range(partitions)}  # fmt: skip
            topic = NewTopic(name, replica_assignments=assignment,
                             topic_configs=dict(configs or {}))  # fmt: skip
        admin = self._admin()
        try:
            admin.create_topics([topic])
        finally:
            admin.close()
        self.wait_leaders(name, partitions)

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader node id (-1 while a partition has none)."""
        admin = self._admin()
        try:
            (info,) = admin.describe_topics([topic])
            return {
                int(p["partition_index"]): int(p["leader_id"]) for p in info.get("partitions", [])
            }
        finally:
            admin.close()

    def wait_leaders(self, topic: str, partitions: int, timeout_s: float = 30.0,
                     avoid: int | None = None) -> dict[int, int]:  # fmt: skip
        """Until every partition has a live leader (other than ``avoid``)."""
        deadline = time.monotonic() + timeout_s
        last: dict[int, int] = {}
        while time.monotonic() < deadline:
            try:
                last = self.leaders(topic)
            except Exception:
                last = {}
            if len(last) == partitions and all(
                lead >= 0 and lead != avoid for lead in last.values()
            ):
                return last
            time.sleep(0.1)
        raise InfraError(f"{topic}: partitions without a live leader after {timeout_s:.0f} s: "
                         f"{last}")  # fmt: skip

    def ready(self) -> bool:
        return any(n.running() and metadata_ready(n.bootstrap) for n in self.nodes.values())

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()
