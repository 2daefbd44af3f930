"""Static checks of the image build files and the manifest rules (no tools needed)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from recsys import kafka_codec

REPO = Path(__file__).resolve().parents[2]


def _load_rules() -> Any:
    """deploy/ is not an installed package (it ships no runtime code): load by path."""
    spec = importlib.util.spec_from_file_location("deploy_rules", REPO / "deploy" / "rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rules = _load_rules()
DOCKER_DIR = REPO / "deploy" / "docker"
SERVICES = ("recommender", "events", "sentiment")


def console_scripts() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(data["project"]["scripts"])


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\"):
            continue
        if buf:
            op, _, rest = buf.partition(" ")
            out.append((op.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for op, rest in instructions(path):
        if op == "FROM":
            result.append([])
        if result:
            result[-1].append((op, rest))
    return result


def resolve_args(path: Path, text: str) -> str:
    """``${NAME}`` replaced by the default of its global ``ARG NAME=default`` (before FROM)."""
    defaults: dict[str, str] = {}
    for op, rest in instructions(path):
        if op == "FROM":
            break
        if op == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip()
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], text)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_dockerfile_whose_entrypoint_is_its_console_script(
    service: str,
) -> None:
    """The exec-form ENTRYPOINT must name a [project.scripts] entry, the service's own."""
    path = DOCKER_DIR / f"{service}.Dockerfile"
    entrypoints = [rest for op, rest in instructions(path) if op == "ENTRYPOINT"]
    assert entrypoints, f"{path.name} has no ENTRYPOINT"
    argv = json.loads(entrypoints[-1])  # exec form is a JSON array; shell form fails here
    assert isinstance(argv, list) and argv
    assert argv[0] in console_scripts(), f"{argv[0]} is not a console script"
    assert argv[0] == f"recsys-{service}"


def test_every_dockerfile_entrypoint_names_an_existing_console_script() -> None:
    scripts = console_scripts()
    files = sorted(DOCKER_DIR.glob("*.Dockerfile"))
    assert {f.stem for f in files} >= set(SERVICES)
    for path in files:
        entry = [rest for op, rest in instructions(path) if op == "ENTRYPOINT"][-1]
        assert json.loads(entry)[0] in scripts, path.name


@pytest.mark.parametrize("path", sorted(DOCKER_DIR.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfile_is_multistage_pinned_nonroot_and_unbuffered(path: Path) -> None:
    parts = stages(path)
    assert len(parts) >= 2, "multi-stage: build tools must stay in the build stage"
    final = parts[-1]
    for stage in parts:
        image = resolve_args(path, stage[0][1].split()[0])
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), f"unpinned base {image}"
    final_text = " ".join(rest for _, rest in final)
    assert "build-essential" not in final_text and "gcc" not in final_text
    assert not any(op == "RUN" and "pip install" in rest for op, rest in final)
    assert any(op == "COPY" and rest.startswith("--from=") for op, rest in final)
    env = " ".join(rest for op, rest in final if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    installs = [rest for stage in parts for op, rest in stage if "pip install" in rest]
    assert installs and all("-c constraints.txt" in i for i in installs)


@pytest.mark.parametrize("path", sorted(DOCKER_DIR.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_base_image_is_one_build_argument_for_every_stage(path: Path) -> None:
    """CI builds on a base made from Debian packages by overriding BASE_IMAGE: a stage with
    its own literal base would silently keep the public image (and mix interpreters)."""
    assert [s[0][1].split()[0] for s in stages(path)] == ["${BASE_IMAGE}"] * len(stages(path))


@pytest.mark.parametrize("path", sorted(DOCKER_DIR.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dependencies_install_in_a_layer_before_any_source_is_copied(path: Path) -> None:
    """A source edit must reuse the dependency layer: the install of the requirements comes
    before the first COPY of a source tree, and the project itself installs with --no-deps."""
    build = stages(path)[0]
    ops = [(op, rest) for op, rest in build if op in ("COPY", "RUN")]
    first_source = next(i for i, (op, rest) in enumerate(ops) if op == "COPY" and "recsys" in rest)
    deps = [i for i, (op, rest) in enumerate(ops) if "-r requirements.txt" in rest]
    assert deps and deps[0] < first_source, "dependencies installed after the source is copied"
    before = " ".join(rest for op, rest in ops[: deps[0]] if op == "COPY")
    assert set(before.split()) <= {"constraints.txt", "pyproject.toml", "./"}, before
    project = [rest for op, rest in ops[first_source:] if op == "RUN" and "pip install" in rest]
    assert project and all("--no-deps" in rest for rest in project)


@pytest.mark.parametrize("service", SERVICES)
def test_every_runtime_image_ships_libgomp_for_implicit(service: str) -> None:
    """implicit (a base dependency, so in every image) links libgomp.so.1 without bundling
    it: without the package `import implicit`, the recommender and `recsys train` fail."""
    final = stages(DOCKER_DIR / f"{service}.Dockerfile")[-1]
    runs = " ".join(rest for op, rest in final if op == "RUN")
    assert re.search(r"apt-get install [^&]*\blibgomp1\b", runs), runs


def test_only_the_sentiment_image_installs_tensorflow_extra() -> None:
    for path in DOCKER_DIR.glob("*.Dockerfile"):
        text = " ".join(rest for op, rest in instructions(path) if op == "RUN")
        assert ("[sentiment]" in text) == (path.stem == "sentiment"), path.name


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".git", ".venv", "data", "models"):
        assert any(p.strip("/*") == excluded for p in patterns), excluded
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "recsys", "services"):
        assert needed not in patterns and f"/{needed}" not in patterns, needed


def test_required_topics_match_the_kafka_io_contract() -> None:
    assert set(rules.REQUIRED_TOPICS) == {
        kafka_codec.TOPIC_CLICKS,
        kafka_codec.TOPIC_CLICKS_DLQ,
        kafka_codec.TOPIC_FEEDBACK,
        kafka_codec.TOPIC_FEEDBACK_SCORED,
        kafka_codec.TOPIC_FEEDBACK_DLQ,
    }
    assert rules.CLICKS_TOPIC == kafka_codec.TOPIC_CLICKS


# --------------------------------------------------------------------------
# rules over hand-built resources
# --------------------------------------------------------------------------


def kafka_docs(brokers: int = 3) -> list[dict[str, Any]]:
    label = {"strimzi.io/cluster": "recsys"}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "Kafka",
            "metadata": {
                "name": "recsys",
                "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"},
            },
            "spec": {
                "kafka": {
                    "version": "3.9.0",
                    "metadataVersion": "3.9-IV0",
                    "listeners": [
                        {"name": "plain", "port": 9092, "type": "internal", "tls": False}
                    ],
                },
                "entityOperator": {"topicOperator": {}},
            },
        },
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaNodePool",
            "metadata": {"name": "dual-role", "labels": label},
            "spec": {
                "replicas": brokers,
                "roles": ["controller", "broker"],
                "storage": {"type": "jbod", "volumes": []},
            },
        },
    ]
    for topic in rules.REQUIRED_TOPICS:
        docs.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaTopic",
                "metadata": {"name": topic, "labels": label},
                "spec": {"partitions": 12, "replicas": 3, "config": {"retention.ms": 604800000}},
            }
        )
    return docs


def test_valid_strimzi_resources_pass() -> None:
    assert rules.check_custom_resources(kafka_docs()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d[2]["spec"].pop("partitions"), "spec.partitions"),
        (lambda d: d[2]["spec"].pop("replicas"), "spec.replicas"),
        (lambda d: d[2]["spec"]["config"].pop("retention.ms"), "retention.ms"),
        (lambda d: d[2]["metadata"].pop("labels"), "strimzi.io/cluster"),
        (lambda d: d[0]["metadata"]["annotations"].pop("strimzi.io/kraft"), "KRaft"),
        (lambda d: d[0]["spec"].update(zookeeper={"replicas": 3}), "zookeeper"),
        (lambda d: d[0]["spec"]["kafka"].pop("listeners"), "listeners"),
        (lambda d: d[1]["spec"].update(roles=["broker"]), "controller and broker roles"),
        (lambda d: d[1]["spec"].update(replicas=1), "broker(s)"),
        (lambda d: d.pop(3), "is missing"),
    ],
)
def test_strimzi_resources_missing_required_fields_fail(mutate: Any, expected: str) -> None:
    """The project's own rules; the schemas' types, enums and required fields (listener
    port, name, tls, storage type ...) are the API server's: deploy/admit.py SCHEMA_CONTROLS."""
    docs = copy.deepcopy(kafka_docs())
    mutate(docs)
    errors = rules.check_custom_resources(docs)
    assert any(expected in e for e in errors), errors


def test_prometheus_operator_resources_need_their_fields() -> None:
    monitor: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "metrics"}]},
    }
    rule: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0"}]}]},
    }
    assert rules.check_custom_resources([monitor, rule]) == []
    broken_monitor = copy.deepcopy(monitor)
    broken_monitor["spec"]["endpoints"] = [{"interval": "15s"}]
    broken_rule = copy.deepcopy(rule)
    broken_rule["spec"]["groups"][0]["rules"][0]["record"] = "job:up:sum"
    errors = rules.check_custom_resources([broken_monitor, broken_rule])
    assert len(errors) == 2, errors


def service_docs(name: str) -> list[dict[str, Any]]:
    container = {
        "name": name,
        "image": f"recsys-{name}",
        "ports": [{"name": "grpc", "containerPort": 50051}],
        "readinessProbe": {"grpc": {"port": 50051}},
        "livenessProbe": {"grpc": {"port": 50051}},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [container],
                }
            },
        },
    }
    return [
        deployment,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "grpc", "port": 50051}]},
        },
    ]


def test_a_conforming_grpc_service_passes() -> None:
    assert rules.check_grpc_service(service_docs("recommender"), "recommender") == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda pod, c: pod.update(terminationGracePeriodSeconds=20), "terminationGrace"),
        (lambda pod, c: pod.update(serviceAccountName="default"), "serviceAccountName"),
        (lambda pod, c: c.update(readinessProbe={"tcpSocket": {"port": 50051}}), "readinessProbe"),
        (lambda pod, c: c.update(livenessProbe={"grpc": {"port": 9100}}), "livenessProbe"),
        (lambda pod, c: c.update(ports=[{"name": "api", "containerPort": 50051}]), "'grpc'"),
        (lambda pod, c: c["resources"].pop("limits"), "resources.limits"),
        (lambda pod, c: c["securityContext"].update(readOnlyRootFilesystem=False), "readOnly"),
        (lambda pod, c: c["securityContext"].pop("capabilities"), "ALL"),
        (lambda pod, c: pod["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    ],
)
def test_grpc_service_rule_violations_are_reported(mutate: Any, expected: str) -> None:
    docs = service_docs("events")
    pod = docs[0]["spec"]["template"]["spec"]
    mutate(pod, pod["containers"][0])
    errors = rules.check_grpc_service(docs, "events")
    assert any(expected in e for e in errors), errors


def test_events_replicas_beyond_click_partitions_fail() -> None:
    docs = kafka_docs() + service_docs("events")
    clicks = next(d for d in docs if d.get("kind") == "KafkaTopic")
    events = docs[-3]
    events["spec"]["replicas"] = clicks["spec"]["partitions"]
    assert not any("partitions" in e for e in rules.check_project(docs))
    events["spec"]["replicas"] = clicks["spec"]["partitions"] + 1
    assert any("partitions" in e for e in rules.check_project(docs))


def test_committed_secret_values_fail() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "b"}}
    assert any("secret values" in e for e in rules.check_project([secret]))


def _settings_literals() -> dict[str, str]:
    """The ``recsys-settings`` ConfigMap literals of the base kustomization."""
    text = (REPO / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text()
    return dict(re.findall(r"^\s+- ([A-Z_]+)=(\S*)$", text, flags=re.MULTILINE))


@pytest.mark.parametrize("service", SERVICES)
def test_images_and_manifests_set_the_ports_the_probes_use(service: str) -> None:
    """The services' own defaults differ (so that all three share one host), so an image
    or a pod relying on them would listen elsewhere than its probes and Service look:
    the images and the settings ConfigMap set GRPC_PORT and METRICS_PORT explicitly."""
    settings = _settings_literals()
    grpc_port, metrics_port = settings["GRPC_PORT"], settings["METRICS_PORT"]
    env: dict[str, str] = {}
    exposed: list[str] = []
    for op, rest in stages(DOCKER_DIR / f"{service}.Dockerfile")[-1]:
        if op == "ENV":
            env.update(token.partition("=")[::2] for token in rest.split() if "=" in token)
        elif op == "EXPOSE":
            exposed += rest.split()
    assert (env.get("GRPC_PORT"), env.get("METRICS_PORT")) == (grpc_port, metrics_port)
    assert sorted(exposed) == sorted([grpc_port, metrics_port])
    manifest = (REPO / "deploy" / "k8s" / "base" / f"{service}.yaml").read_text()
    named = re.findall(r"- name: (grpc|metrics)\n\s+containerPort: (\d+)", manifest)
    assert named and all(port == settings[f"{name.upper()}_PORT"] for name, port in named)
    probes = re.findall(r"grpc:\n\s+port: (\d+)", manifest)
    assert probes and set(probes) == {grpc_port}
    assert re.search(r"envFrom:\s+- configMapRef:\s+name: recsys-settings\n", manifest)


# --------------------------------------------------------------------------
# least privilege: every service logs in with credentials of its own
# --------------------------------------------------------------------------

K8S = REPO / "deploy" / "k8s"
_SECRET_ENV = re.compile(
    r"- name: (\w+)\n\s+valueFrom:\n\s+secretKeyRef:\n\s+name: (\S+)\n\s+key: (\S+)\n"
)
_PLAIN_ENV = re.compile(r"- name: (\w+)\n\s+value: (\S+)\n")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob")


def manifest_workloads(*paths: Path) -> dict[str, dict[str, Any]]:
    """``Kind/name`` of every workload in ``paths`` with the env it sets: the variables
    read from a Secret (``(Secret, key)``) and the plain values. Text-level (no YAML
    parser in the project environment); the committed files are block style."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        for part in path.read_text().split("\n---\n"):
            doc = part.rstrip("\n") + "\n"
            kind = re.search(r"^kind: (\w+)$", doc, flags=re.MULTILINE)
            name = re.search(r"^metadata:\n(?:  .*\n)*?  name: (\S+)$", doc, flags=re.MULTILINE)
            if not kind or not name or kind.group(1) not in WORKLOAD_KINDS:
                continue
            entry = out.setdefault(f"{kind.group(1)}/{name.group(1)}", {"secret": {}, "value": {}})
            entry["secret"].update({v: (s, k) for v, s, k in _SECRET_ENV.findall(doc)})
            entry["value"].update(dict(_PLAIN_ENV.findall(doc)))
            entry.setdefault("text", "")
            entry["text"] += doc
    return out


def overlay_workloads(overlay: str) -> dict[str, dict[str, Any]]:
    patches = sorted((K8S / "overlays" / overlay / "patches").glob("*.yaml"))
    return manifest_workloads(*sorted((K8S / "base").glob("*.yaml")), *patches)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_service_reads_its_redis_and_kafka_login_from_its_own_secret(overlay: str) -> None:
    workloads = overlay_workloads(overlay)
    # The opt-in Spark training job is one more workload of the trainer's.
    spark_job = K8S / "components" / "spark-training" / "trainer-spark.yaml"
    workloads.update(manifest_workloads(spark_job))
    users: dict[tuple[str, str], set[str]] = {}
    for workload, service in rules.CREDENTIAL_OWNERS.items():
        env = workloads[workload]
        # REDIS_URL logs in as the service's own ACL user, from the service's own Secret.
        assert env["secret"]["REDIS_USERNAME"] == (f"recsys-redis-{service}", "username")
        assert env["secret"]["REDIS_PASSWORD"] == (f"recsys-redis-{service}", "password")
        assert "://$(REDIS_USERNAME):$(REDIS_PASSWORD)@" in env["value"]["REDIS_URL"], workload
        for secret_key in env["secret"].values():
            users.setdefault(secret_key, set()).add(service)
    for workload, env in workloads.items():
        for var in rules.CREDENTIAL_VARS:
            assert var not in env["value"], f"{workload}: {var} is a literal"
    # No Secret key is read by two services (the two sentiment Deployments are one).
    shared = {key: owners for key, owners in users.items() if len(owners) > 1}
    assert not shared, shared
    # Kafka: prod logs every consumer in as its own SCRAM user; dev keeps the
    # unauthenticated in-cluster listener, so nobody carries Kafka credentials there.
    kafka_clients = {"Deployment/events": "recsys-events",
                     "Deployment/sentiment-consumer": "recsys-sentiment"}  # fmt: skip
    for workload, env in workloads.items():
        if overlay == "prod" and workload in kafka_clients:
            user = kafka_clients[workload]
            assert env["value"]["KAFKA_SASL_USERNAME"] == user
            assert env["secret"]["KAFKA_SASL_PASSWORD"] == (user, "password")
            assert env["value"]["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
            assert env["value"]["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        else:
            assert not any(v.startswith("KAFKA_SASL") for v in env["value"]), workload
            assert not any(v.startswith("KAFKA_SASL") for v in env["secret"]), workload
    # The in-cluster Redis holds no password: only the ACL file, from its own Secret.
    redis = workloads["StatefulSet/redis"]
    assert redis["secret"] == {}
    assert re.search(r"secretName: recsys-redis-acl\n", redis["text"])
    assert "aclfile " in (K8S / "base" / "redis.yaml").read_text()


def test_prod_kafka_users_carry_exactly_the_acls_of_kafka_acls() -> None:
    from recsys_tools.infra.kafka_acls import service_grants

    prod = {"EVENTS_CREATE_TOPICS": "false", "SENTIMENT_CREATE_TOPICS": "false"}
    expected = {
        (g.user, g.resource, g.name, op) for g in service_grants(prod) for op in g.operations
    }
    text = (K8S / "overlays" / "prod" / "kafka-users.yaml").read_text()
    found = set()
    for doc in text.split("\n---\n"):
        user = re.search(r"^kind: KafkaUser\nmetadata:\n  name: (\S+)$", doc, flags=re.MULTILINE)
        assert user, doc
        assert "type: scram-sha-512" in doc
        acls = re.findall(
            r"- resource: \{type: (\w+), name: (\S+), patternType: literal\}\n"
            r"\s+operations: \[([A-Za-z, ]+)\]",
            doc,
        )
        assert acls, doc
        for resource, name, operations in acls:
            for op in operations.split(", "):
                found.add((user.group(1), resource, name, op.upper()))
    assert found == expected


def _workload(kind: str, name: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    pod = {"containers": [{"name": name, "env": env}]}
    spec = (
        {"jobTemplate": {"spec": {"template": {"spec": pod}}}}
        if kind == "CronJob"
        else {"template": {"spec": pod}}
    )
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def _redis_env(secret: str) -> list[dict[str, Any]]:
    return [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for var, key in (("REDIS_USERNAME", "username"), ("REDIS_PASSWORD", "password"))
    ] + [{"name": "REDIS_URL", "value": "redis://$(REDIS_USERNAME):$(REDIS_PASSWORD)@redis:6379/0"}]


def test_credentials_rule_accepts_one_secret_per_service() -> None:
    docs = [
        _workload("Deployment", "events", _redis_env("recsys-redis-events")),
        _workload("Deployment", "sentiment", _redis_env("recsys-redis-sentiment")),
        _workload("Deployment", "sentiment-consumer", _redis_env("recsys-redis-sentiment")),
        _workload("CronJob", "trainer", _redis_env("recsys-redis-trainer")),
    ]
    assert rules.check_credentials(docs) == []


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        (
            [
                _workload("Deployment", "events", _redis_env("recsys-redis")),
                _workload("CronJob", "trainer", _redis_env("recsys-redis")),
            ],
            "shared by",
        ),
        (
            [_workload("Deployment", "events", [{"name": "KAFKA_SASL_PASSWORD", "value": "x"}])],
            "must come from a Secret",
        ),
        (
            [
                _workload(
                    "Deployment",
                    "events",
                    [
                        *_redis_env("recsys-redis-events")[:2],
                        {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379/0"},
                    ],
                )
            ],
            "REDIS_URL must log in",
        ),
    ],
)
def test_credentials_rule_rejects_shared_or_literal_logins(
    docs: list[dict[str, Any]], expected: str
) -> None:
    errors = rules.check_credentials(docs)
    assert any(expected in e for e in errors), errors


# --------------------------------------------------------------------------
# the Spark training job (components/spark-training)
# --------------------------------------------------------------------------

SPARK_COMPONENT = K8S / "components" / "spark-training"


def _cronjob(name: str, command: list[str], suspend: bool | None = None) -> dict[str, Any]:
    doc = _workload("CronJob", name, [])
    doc["apiVersion"] = "batch/v1"
    doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] = command
    if suspend is not None:
        doc["spec"]["suspend"] = suspend
    return doc


SPARK_TRAIN = ["recsys", "train", "--engine", "spark", "--model-dir", "$(RECSYS_MODEL_DIR)"]


def test_spark_trainer_rule_accepts_the_spark_job_with_the_trainer_suspended() -> None:
    docs = [
        _cronjob("trainer", ["recsys", "train"], suspend=True),
        _cronjob("trainer-spark", SPARK_TRAIN),
    ]
    assert rules.check_spark_trainer(docs) == []
    assert rules.check_spark_trainer([_cronjob("trainer", ["recsys", "train"])]) == []


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        (
            [_cronjob("trainer", ["recsys", "train"]), _cronjob("trainer-spark", SPARK_TRAIN)],
            "must be suspended",
        ),
        (
            [
                _cronjob("trainer", ["recsys", "train"], suspend=True),
                _cronjob("trainer-spark", ["recsys", "train"]),
            ],
            "--engine spark",
        ),
    ],
)
def test_spark_trainer_rule_rejects_two_publishers_or_the_wrong_engine(
    docs: list[dict[str, Any]], expected: str
) -> None:
    """Regression guard: two CronJobs publishing into one model store race on LATEST."""
    errors = rules.check_spark_trainer(docs)
    assert any(expected in e for e in errors), errors


def test_spark_job_logs_in_as_the_trainer_and_runs_the_spark_engine() -> None:
    workloads = manifest_workloads(SPARK_COMPONENT / "trainer-spark.yaml")
    env = workloads["CronJob/trainer-spark"]
    assert rules.CREDENTIAL_OWNERS["CronJob/trainer-spark"] == "trainer"
    assert env["secret"]["REDIS_USERNAME"] == ("recsys-redis-trainer", "username")
    assert env["secret"]["REDIS_PASSWORD"] == ("recsys-redis-trainer", "password")
    assert '["recsys", "train", "--engine", "spark"' in env["text"]
    assert "claimName: recsys-model-store" in env["text"]  # the store the recommender watches


def test_spark_executor_image_is_the_spark_version_of_the_pinned_pyspark() -> None:
    """The driver (pyspark from constraints.txt) and the executors (the stock Spark image)
    must run one Spark version: Spark refuses executors of another."""
    pinned = re.search(
        r"^pyspark==(\S+)$", (REPO / "constraints.txt").read_text(), flags=re.MULTILINE
    )
    conf = (SPARK_COMPONENT / "spark-defaults.conf").read_text()
    image = re.search(r"^spark\.kubernetes\.container\.image\s+(\S+)$", conf, flags=re.MULTILINE)
    assert pinned and image
    assert image.group(1).startswith(f"apache/spark:{pinned.group(1)}-"), image.group(1)


def test_deploy_check_stops_instead_of_recursing_when_the_tools_venv_is_broken(
    tmp_path: Path,
) -> None:
    """Regression: a half-installed tools venv (stamp written, kubernetes-validate missing)
    made each run re-exec itself inside it again, one waiting process per level, without end.
    Inside the tools environment (the variable set) with the tools missing, it must stop."""
    import os
    import subprocess

    env = {**os.environ, "RECSYS_DEPLOY_CHECK_IN_TOOLS": "1", "RECSYS_TOOLS_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.check", "--no-scan"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "lacks the validation tools" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing installed: it stopped before that


# --------------------------------------------------------------------------
# API authentication: the API Deployments require credentials, one Secret per client
# --------------------------------------------------------------------------


def _api(
    name: str,
    mode: str = "required",
    sources: list[dict[str, Any]] | None = None,
    path: str = "/etc/recsys/auth",
) -> dict[str, Any]:
    env = [
        {"name": "AUTH_MODE", "value": mode},
        {"name": "AUTH_CREDENTIALS_FILE", "value": path},
    ]
    doc = _workload("Deployment", name, env)
    pod = doc["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "api-credentials", "mountPath": "/etc/recsys/auth", "readOnly": True},
    ]
    if sources is None:
        sources = [{"secret": {"name": f"recsys-auth-{name}-client"}}]
    pod["volumes"] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "api-credentials", "projected": {"sources": sources}},
    ]
    return doc


def test_api_auth_rule_accepts_required_auth_from_secrets() -> None:
    assert rules.check_api_auth([_api("recommender"), _api("sentiment")]) == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_api("recommender", mode="off"), "AUTH_MODE must be 'required'"),
        (_api("sentiment", path="/var/creds"), "must lie in a mounted volume"),
        (_api("sentiment", path=""), "must lie in a mounted volume"),
        (
            _api("recommender", sources=[{"configMap": {"name": "clients"}}]),
            "must be Secrets only",
        ),
    ],
)
def test_api_auth_rule_rejects_an_api_open_or_credentials_outside_secrets(
    doc: dict[str, Any], expected: str
) -> None:
    errors = rules.check_api_auth([doc])
    assert any(expected in e for e in errors), errors


def test_a_client_secret_mounted_by_two_workloads_is_shared() -> None:
    shared = [{"secret": {"name": "recsys-auth-admin"}}]
    errors = rules.check_credentials(
        [_api("recommender", sources=shared), _api("sentiment", sources=shared)]
    )
    assert any("Secret/recsys-auth-admin is shared" in e for e in errors), errors


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_api_deployments_require_auth_with_one_secret_per_client(overlay: str) -> None:
    workloads = overlay_workloads(overlay)
    clients: dict[str, str] = {}
    for workload in rules.API_WORKLOADS:
        entry = workloads[workload]
        assert entry["value"]["AUTH_MODE"] == "required"
        assert entry["value"]["AUTH_CREDENTIALS_FILE"] == "/etc/recsys/auth"
        for secret, path in re.findall(
            r"- secret:\n\s+name: (recsys-auth-\S+)\n\s+items:\n\s+- key: client\.json\n"
            r"\s+path: (\S+)\n",
            entry["text"],
        ):
            assert secret not in clients, f"{secret} mounted by {clients.get(secret)} too"
            clients[secret] = workload
            assert path == secret.removeprefix("recsys-auth-") + ".json"
    assert set(clients.values()) == set(rules.API_WORKLOADS)
    assert "AUTH_MODE" not in workloads["Deployment/sentiment-consumer"]["value"]
