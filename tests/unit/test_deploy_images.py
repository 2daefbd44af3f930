"""The logic of deploy/images.py and deploy/admit.py that needs no container engine or cluster:
how a pod of the manifests becomes a hardened ``podman run``, how the kubernetes module's
go.mod loses its staging replaces, and the negative controls the API server must reject."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from deploy import admit, images


def _pod() -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
        },
        "containers": [
            {
                "name": "recommender",
                "image": "recsys-recommender",
                "envFrom": [{"configMapRef": {"name": "recsys-settings"}}],
                "env": [
                    {
                        "name": "REDIS_PASSWORD",
                        "valueFrom": {
                            "secretKeyRef": {"name": "recsys-redis-recommender", "key": "password"}
                        },
                    },
                    {
                        "name": "REDIS_URL",
                        "value": "redis://u:$(REDIS_PASSWORD)@$(REDIS_HOST):$(REDIS_PORT)/0",
                    },
                    {"name": "LITERAL", "value": "$$(REDIS_HOST) $(UNDEFINED)"},
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "model-store", "mountPath": "/models/recsys", "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "model-store", "persistentVolumeClaim": {"claimName": "recsys-model-store"}},
        ],
    }


OBJECTS = [
    {
        "kind": "ConfigMap",
        "metadata": {"name": "recsys-settings"},
        "data": {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "GRPC_PORT": "50051"},
    }
]
SECRETS = {"recsys-redis-recommender": {"username": "recsys-recommender", "password": "pw"}}


def test_container_env_follows_kubernetes_order_and_expansion() -> None:
    env = images.container_env(
        _pod()["containers"][0],
        OBJECTS,
        SECRETS,
        {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "7000", "GRPC_PORT": "41000", "KAFKA_X": "no"},
    )
    assert env["REDIS_URL"] == "redis://u:pw@127.0.0.1:7000/0"
    assert env["LITERAL"] == "$(REDIS_HOST) $(UNDEFINED)"  # $$ escapes, unknown names stay
    assert env["GRPC_PORT"] == "41000"
    assert "KAFKA_X" not in env  # an override never adds a variable the manifest lacks


def test_hardened_args_reproduce_the_security_context(tmp_path: Path) -> None:
    pod = _pod()
    claim = tmp_path / "store"
    claim.mkdir()
    dirs = images.PodDirs(tmp_path / "pod", {"recsys-model-store": claim})
    args = images.hardened_args(pod, pod["containers"][0], dirs, {"A": "1"})
    for flag in (
        "--read-only",
        "--read-only-tmpfs=false",
        "--user=10001:10001",
        "--group-add=10001",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--volume={claim}:/models/recsys:ro",
        f"--volume={tmp_path / 'pod' / 'tmp'}:/tmp:rw",
        "--env=A=1",
    ):
        assert flag in args
    assert not any(a.startswith("--privileged") or a.startswith("--cap-add") for a in args)
    # writable only where the pod declares a volume: one emptyDir, one read-only claim
    assert [a for a in args if a.startswith("--volume")] == [
        f"--volume={tmp_path / 'pod' / 'tmp'}:/tmp:rw",
        f"--volume={claim}:/models/recsys:ro",
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("securityContext", "readOnlyRootFilesystem"), False),
        (("securityContext", "allowPrivilegeEscalation"), True),
        (("securityContext", "capabilities"), {"drop": ["NET_RAW"]}),
        (("securityContext", "runAsUser"), 0),
    ],
)
def test_a_weakened_manifest_is_refused_not_smoke_run(
    tmp_path: Path, path: tuple[str, str], value: Any
) -> None:
    pod = _pod()
    pod["containers"][0][path[0]][path[1]] = value
    dirs = images.PodDirs(tmp_path, {"recsys-model-store": tmp_path})
    with pytest.raises(ValueError):
        images.hardened_args(pod, pod["containers"][0], dirs, {})


def test_a_volume_kind_the_smoke_run_cannot_provide_is_an_error(tmp_path: Path) -> None:
    pod = _pod()
    pod["volumes"][0] = {"name": "tmp", "hostPath": {"path": "/"}}
    dirs = images.PodDirs(tmp_path, {"recsys-model-store": tmp_path})
    with pytest.raises(ValueError, match="only emptyDir, Secret and PVC"):
        images.hardened_args(pod, pod["containers"][0], dirs, {})


def test_containers_conf_uses_runc_and_no_default_nproc_ulimit(tmp_path: Path) -> None:
    text = images.containers_conf(tmp_path)
    assert 'runtime = "runc"' in text
    assert "default_ulimits = []" in text
    assert str(tmp_path / "storage") in images.storage_conf(tmp_path)


def test_base_tag_changes_with_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = images.base_tag()
    monkeypatch.setattr(images, "BASE_PACKAGES", (*images.BASE_PACKAGES, "libgomp1"))
    assert images.base_tag() != before


def test_missing_tool_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install podman"):
        images.require_tools(["podman"])


GO_MOD = """module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
\tk8s.io/apiextensions-apiserver v0.0.0
\tk8s.io/klog/v2 v2.120.1
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiextensions-apiserver => ./staging/src/k8s.io/apiextensions-apiserver
)
"""


def test_unstage_go_mod_requires_the_published_staging_modules() -> None:
    text = admit.unstage_go_mod(GO_MOD, "1.30.14")
    assert "./staging" not in text
    assert "\tk8s.io/api v0.30.14\n" in text
    assert "\tk8s.io/apiextensions-apiserver v0.30.14\n" in text
    assert "k8s.io/klog/v2 v2.120.1" in text  # not a staging module: untouched


def test_unstage_go_mod_refuses_a_file_without_staging() -> None:
    with pytest.raises(ValueError):
        admit.unstage_go_mod("module example.com/x\n", "1.30.14")


def _render() -> list[dict[str, Any]]:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "recommender", "namespace": "recsys"},
        "spec": {"template": {"spec": _pod()}},
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "trainer"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": _pod()}}}},
    }
    listener = {"name": "plain", "port": 9092, "type": "internal", "tls": False}
    acl = {"resource": {"type": "topic", "name": "t"}, "operations": ["Read"]}
    rule = {"alert": "A", "expr": "up == 0", "for": "5m"}
    crs: list[tuple[str, dict[str, Any]]] = [
        ("KafkaTopic", {"partitions": 12}),
        ("Kafka", {"kafka": {"listeners": [listener]}}),
        ("KafkaNodePool", {"replicas": 1, "roles": ["broker"], "storage": {"type": "jbod"}}),
        (
            "KafkaUser",
            {"authentication": {"type": "scram-sha-512"}, "authorization": {"acls": [acl]}},
        ),
        ("ServiceMonitor", {"selector": {}, "endpoints": [{"port": "metrics"}]}),
        ("PodMonitor", {"selector": {}}),
        ("PrometheusRule", {"groups": [{"name": "g", "rules": [rule]}]}),
    ]
    return [deployment, cronjob] + [
        {"apiVersion": "x/v1", "kind": kind, "metadata": {"name": kind.lower()}, "spec": spec}
        for kind, spec in crs
    ]


def test_pod_templates_cover_every_workload_kind() -> None:
    labels = [label for label, _ in admit.pod_templates(_render())]
    assert labels == ["Deployment/recommender", "CronJob/trainer"]


def test_statefulset_pod_templates_get_their_claim_volumes() -> None:
    """As the StatefulSet controller does: a claim template becomes a pod volume."""
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "redis"},
        "spec": {
            "template": {"spec": {"containers": []}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
        },
    }
    [(_label, pod)] = admit.pod_templates([sts])
    assert pod["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-redis-0"}}
    ]


def test_negative_controls_are_each_broken_in_one_way() -> None:
    docs = _render()
    original = copy.deepcopy(docs)
    controls = admit.negative_controls(docs)
    assert docs == original  # the renders themselves are untouched
    by_name = {name: (target, doc) for name, target, doc in controls}
    assert len(by_name) == len(controls) == 2 + len(admit.SCHEMA_CONTROLS)
    target, pod = by_name["stripped-securityContext"]
    assert target == "pods" and pod["kind"] == "Pod"
    assert "securityContext" not in pod["spec"]
    assert all("securityContext" not in c for c in pod["spec"]["containers"])
    _, unknown = by_name["unknown-field-in-deployment"]
    assert "readOnlyRootFileSystem" in unknown["spec"]["template"]["spec"]["containers"][0]
    _, topic = by_name["KafkaTopic partitions not an integer"]
    assert topic["spec"]["partitions"] == "twelve"
    for name, _target, doc in controls:  # each differs from the object it was made from
        assert doc not in original, name


def test_a_negative_control_without_its_kind_is_an_error_not_dropped() -> None:
    docs = [d for d in _render() if d["kind"] != "PodMonitor"]
    with pytest.raises(LookupError, match="PodMonitor"):
        admit.negative_controls(docs)


def test_report_is_ok_only_with_every_control_rejected_and_nothing_else() -> None:
    good = admit.Report(1, 10, 0, 3, 0, 3, 3)
    assert good.ok
    assert not admit.Report(1, 10, 0, 3, 0, 3, 2).ok
    assert not admit.Report(1, 10, 1, 3, 0, 3, 3).ok
    assert not admit.Report(1, 10, 0, 3, 1, 3, 3).ok
    assert not admit.Report(0, 0, 0, 0, 0, 0, 0).ok  # nothing admitted is no pass
