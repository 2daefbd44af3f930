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
        image = stage[0][1].split()[0]
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
        (lambda d: d[0]["spec"]["kafka"]["listeners"][0].update(port=9091), "port"),
        (lambda d: d[0]["spec"]["kafka"]["listeners"][0].update(name="Plain_Text"), "name"),
        (lambda d: d[0]["spec"]["kafka"]["listeners"][0].pop("tls"), "tls"),
        (lambda d: d[1]["spec"].update(roles=["broker"]), "controller and broker roles"),
        (lambda d: d[1]["spec"].pop("storage"), "storage.type"),
        (lambda d: d[1]["spec"].update(replicas=1), "broker(s)"),
        (lambda d: d.pop(3), "is missing"),
    ],
)
def test_strimzi_resources_missing_required_fields_fail(mutate: Any, expected: str) -> None:
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
    del broken_rule["spec"]["groups"][0]["rules"][0]["expr"]
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
