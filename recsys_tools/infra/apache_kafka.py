"""A real Apache Kafka broker (KRaft, single node) run from its Maven Central jars.

No tarball mirror and no Docker: Maven resolves ``org.apache.kafka:kafka_2.13``
and its runtime dependencies once into ``$RECSYS_CACHE_DIR/kafka/<version>/libs``
(under a file lock, so parallel test sessions fetch it once), then we run
``kafka.tools.StorageTool format`` and ``kafka.Kafka`` with a generated
``server.properties``. The broker keeps its ports and data dir across
``restart()``, which the fault tests rely on.

Opt-in secured mode (``scram_users=``): the client listener speaks SASL_PLAINTEXT
with SCRAM-SHA-512, the users are written into the cluster metadata at format
time, and the StandardAuthorizer denies whatever no ACL allows, so a test can
check that each service gets only its own topics and group (docs/infrastructure.md).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recsys.errors import ConfigError, InfraError
from recsys.settings import KafkaSecurity
from recsys_tools.harness import ManagedProcess, ManagedServer, free_port, port_open
from recsys_tools.infra.endpoints import KafkaEndpoint, cache_dir

DEFAULT_KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
MIN_JAVA = 17

MISSING_JAVA_HINT = (
    f"install a JDK {MIN_JAVA}+ and Maven, or set KAFKA_BOOTSTRAP_SERVERS to an existing "
    "broker, or use RECSYS_KAFKA=tansu (embedded, no Java)"
)

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>recsys.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# INFO to stdout (captured in the work dir's log), quieter for the chatty loggers.
_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


def java_major(java: str) -> int | None:
    """Major version reported by ``java -version`` (``None`` if it cannot be read)."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(out.stderr + out.stdout)


def parse_java_version(text: str) -> int | None:
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_292" style
        major = int(match.group(2))
    return major


def kafka_version(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    version = env.get("RECSYS_KAFKA_VERSION", "").strip() or DEFAULT_KAFKA_VERSION
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ConfigError(f"RECSYS_KAFKA_VERSION={version!r} is not x.y.z (default: 4.1.1)")
    if int(version.split(".")[0]) < 4:
        raise ConfigError(
            f"RECSYS_KAFKA_VERSION={version} is too old: KRaft-only startup needs Kafka 4.x"
        )
    return version


def libs_dir(version: str, env: Mapping[str, str] | None = None) -> Path:
    return cache_dir(env) / "kafka" / version / "libs"


def jars_present(version: str, env: Mapping[str, str] | None = None) -> bool:
    return (libs_dir(version, env).parent / ".complete").exists()


def preflight(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Check what running Apache Kafka needs; return (java path, version) or raise ConfigError."""
    version = kafka_version(env)
    java = shutil.which("java")
    if java is None:
        raise ConfigError(f"Apache Kafka needs `java` on PATH: {MISSING_JAVA_HINT}")
    major = java_major(java)
    if major is None or major < MIN_JAVA:
        raise ConfigError(
            f"Apache Kafka needs Java {MIN_JAVA}+ (found {major}): {MISSING_JAVA_HINT}"
        )
    if not jars_present(version, env) and shutil.which("mvn") is None:
        raise ConfigError(
            f"fetching Apache Kafka {version} jars needs `mvn` on PATH: {MISSING_JAVA_HINT}"
        )
    return java, version


def ensure_jars(version: str, env: Mapping[str, str] | None = None, timeout_s: float = 900) -> Path:
    """Resolve the broker's runtime classpath once per version; safe across processes."""
    libs = libs_dir(version, env)
    done = libs.parent / ".complete"
    if done.exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with (libs.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be fetching right now
        if done.exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ConfigError(
                f"fetching Apache Kafka {version} jars needs `mvn` on PATH: {MISSING_JAVA_HINT}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        pom = libs.parent / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA_VERSION, version=version, log4j=LOG4J_VERSION))
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise InfraError(f"mvn did not fetch Kafka {version} within {timeout_s:.0f}s") from None
        if out.returncode != 0:
            last = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
            raise InfraError(f"mvn could not fetch Apache Kafka {version} jars:\n{last}")
        if not any(libs.glob("kafka_*.jar")):
            raise InfraError(f"mvn finished but no kafka jar landed in {libs}")
        done.write_text(version + "\n")
    return libs


SCRAM_MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class ScramConfig:
    """The secured mode: SCRAM users (name -> password), ``admin`` the super user.

    The admin logs the broker in to itself (inter-broker) and sets up topics and ACLs
    in tests; every other user has only what ACLs grant it.
    """

    users: Mapping[str, str]
    admin: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    def credentials(self) -> dict[str, str]:
        return {**self.users, self.admin: self.admin_password}


def server_properties(
    *, port: int, controller_port: int, log_dir: Path, scram: ScramConfig | None = None
) -> str:
    """Single-node KRaft config: one process is both broker and controller, RF 1 everywhere.

    With ``scram`` the client listener is SASL_PLAINTEXT (SCRAM-SHA-512) and ACLs are
    enforced; without it the file is exactly the unsecured one the other suites use.
    """
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.flush.interval.messages": "9223372036854775807",
    }
    if scram is not None:
        props.update(_secured_properties(port, controller_port, scram))
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _secured_properties(port: int, controller_port: int, scram: ScramConfig) -> dict[str, str]:
    """Clients and the inter-broker link on SASL_PLAINTEXT; the controller listener stays
    PLAINTEXT on loopback, so its (ANONYMOUS) principal is a super user as well: KRaft's
    broker-to-controller requests are authorized too, and SCRAM credentials live in the
    metadata the controller serves, so the controller cannot check them itself."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{scram.admin}" password="{scram.admin_password}";'
    )
    listener = f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"
    return {
        "listeners": (
            f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        listener: jaas,
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{scram.admin};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        # Topics come from the admin (or an operator), never from a client's metadata request.
        "auto.create.topics.enable": "false",
    }


class ApacheKafka(ManagedServer):
    """One KRaft broker+controller on loopback; ``restart()`` keeps its ports and data."""

    kind = "apache"
    stop_timeout_s = 30.0  # a broker flushing its logs takes longer than Redis or Tansu

    def __init__(
        self,
        work_dir: Path,
        *,
        version: str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        detached: bool = False,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 120.0,
        scram: ScramConfig | None = None,
    ) -> None:
        self.scram = scram
        self._env = dict(os.environ if env is None else env)
        self.java, self.version = preflight(self._env)
        if version is not None:
            self.version = version
        self.work_dir = work_dir.resolve()
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.start_timeout_s = start_timeout_s
        self.data_dir = self.work_dir / "data"
        self.config_path = self.work_dir / "server.properties"
        self.log_path = self.work_dir / "kafka.log"
        self.detached = detached
        self._proc: ManagedProcess | None = None
        #: Set by a multi-node cluster, whose nodes must share one; None: a fresh one.
        self.cluster_id: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def description(self) -> str:
        return f"Apache Kafka {self.version} (KRaft)"

    def security(self, user: str | None = None, password: str | None = None) -> KafkaSecurity:
        """Client settings to log in as ``user`` (default: the admin); PLAINTEXT when the
        broker is not secured. ``password`` overrides the real one (to test a bad login)."""
        if self.scram is None:
            return KafkaSecurity()
        name = user or self.scram.admin
        credentials = self.scram.credentials()
        if password is None and name not in credentials:
            raise ConfigError(f"no SCRAM user {name!r} on this broker")
        return KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism=SCRAM_MECHANISM,
            username=name,
            password=credentials[name] if password is None else password,
        )

    def endpoint(self) -> KafkaEndpoint:
        return KafkaEndpoint(self.bootstrap, "apache", self.description, {}, server=self)

    def _classpath(self) -> str:
        return str(ensure_jars(self.version, self._env)) + os.sep + "*"

    def _java_env(self) -> dict[str, str]:
        env = dict(self._env)
        # A user's KAFKA_OPTS/JAVA_TOOL_OPTIONS could open JMX ports or agents; keep it hermetic.
        env.pop("KAFKA_OPTS", None)
        return env

    def _format_storage(self, classpath: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return  # restart: keep the cluster id and data
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = [self.java, "-cp", classpath, "kafka.tools.StorageTool"]
        cluster_id = self.cluster_id or self.random_cluster_id(classpath)
        scram_args: list[str] = []
        if self.scram is not None:
            for name, password in self.scram.credentials().items():
                scram_args += [
                    "--add-scram",
                    f"{SCRAM_MECHANISM}=[name={name},password={password}]",
                ]
        fmt = subprocess.run(
            [*base, "format", "-t", cluster_id, "-c", str(self.config_path), *scram_args],
            capture_output=True, text=True, timeout=120, check=False, env=self._java_env(),
        )  # fmt: skip
        if fmt.returncode != 0:
            raise InfraError(f"kafka StorageTool format failed: {(fmt.stdout + fmt.stderr)[-800:]}")

    def random_cluster_id(self, classpath: str | None = None) -> str:
        base = [self.java, "-cp", classpath or self._classpath(), "kafka.tools.StorageTool"]
        uuid = subprocess.run(
            [*base, "random-uuid"], capture_output=True, text=True, timeout=120, check=False,
            env=self._java_env(),
        )  # fmt: skip
        if uuid.returncode != 0 or not uuid.stdout.strip():
            raise InfraError(f"kafka StorageTool random-uuid failed: {uuid.stderr.strip()[-500:]}")
        return uuid.stdout.strip().splitlines()[-1].strip()

    def properties(self) -> str:
        """The ``server.properties`` text (a cluster node overrides it)."""
        return server_properties(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.data_dir,
            scram=self.scram,
        )

    def start(self) -> None:
        if self._proc is not None and self._proc.running():
            return
        classpath = self._classpath()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.properties())
        log4j = self.work_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        self._format_storage(classpath)
        argv = [
            self.java, f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.work_dir}",
            f"-Drecsys.workdir={self.work_dir}",  # marker: lets `infra down` verify the pid
            "-cp", classpath, "kafka.Kafka", str(self.config_path),
        ]  # fmt: skip
        proc = ManagedProcess(
            f"Apache Kafka {self.version}",
            argv,
            log_path=self.log_path,
            cwd=self.work_dir,
            env=self._java_env(),
            detached=self.detached,
        )
        self._launch(proc, f"metadata on {self.bootstrap}")

    def _ready(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        return metadata_ready(self.bootstrap, security=self.security())


def metadata_ready(
    bootstrap: str, timeout_s: float = 5.0, *, security: KafkaSecurity | None = None
) -> bool:
    """A broker is ready when it answers a metadata request, not merely when its port is open."""
    from kafka.admin import KafkaAdminClient

    from recsys.kafka_io import security_config

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="recsys-infra-probe",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **security_config(security),
    )
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()
