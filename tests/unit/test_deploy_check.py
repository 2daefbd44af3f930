"""The deploy-check driver fails on deliberately broken manifests.

Each test copies deploy/k8s, breaks one thing and runs the same command CI runs
(``python -m deploy.check``) against the copy. The first run installs the pinned
validation tools (kubectl, kubernetes-validate, checkov) into the user cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def run_check(k8s_root: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.check", "--k8s-root", str(k8s_root), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON summary line:\n{proc.stdout}\n{proc.stderr}"
    return proc.returncode, json.loads(lines[-1]), proc.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of deploy/k8s reduced to one combination (dev, no components) for speed."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    shutil.rmtree(root / "overlays" / "prod")
    shutil.rmtree(root / "components")
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_committed_tree_renders_and_validates_every_combination() -> None:
    """Render + schema + custom-resource + invariant checks over all combinations."""
    rc, summary, out = run_check(K8S, "--no-scan")
    assert rc == 0, out
    overlays = [p for p in (K8S / "overlays").iterdir() if p.is_dir()]
    components = [p for p in (K8S / "components").iterdir() if p.is_dir()]
    assert summary["combinations"] == len(overlays) * 2 ** len(components) >= 8
    assert summary["rendered"] == summary["combinations"]
    assert summary["schema_errors"] == summary["cr_errors"] == summary["project_errors"] == 0


def test_unmodified_copy_passes_including_the_policy_scan(tree: Path) -> None:
    """The baseline for the broken variants below: the same copy, unbroken, passes."""
    rc, summary, out = run_check(tree)
    assert rc == 0, out
    assert summary["combinations"] == summary["rendered"] == 1
    assert summary["policy_failed"] == 0 and summary["policy_passed"] > 0


def test_schema_violation_fails(tree: Path) -> None:
    edit(tree / "base" / "tfserving.yaml", "  replicas: 1\n", '  replicas: "one"\n')
    rc, summary, out = run_check(tree, "--no-scan")
    assert rc == 1
    assert summary["schema_errors"] >= 1, out


def test_unknown_field_fails_strict_schema_validation(tree: Path) -> None:
    edit(
        tree / "base" / "redis.yaml",
        "  serviceName: redis-headless\n",
        "  serviceName: redis-headless\n  replica: 1\n",
    )
    rc, summary, out = run_check(tree, "--no-scan")
    assert rc == 1
    assert summary["schema_errors"] >= 1, out


def test_kafka_topic_without_partitions_fails(tree: Path) -> None:
    edit(tree / "base" / "kafka.yaml", "  partitions: 12\n", "")
    rc, summary, out = run_check(tree, "--no-scan")
    assert rc == 1
    assert summary["cr_errors"] >= 1 and "spec.partitions" in out, out


def test_short_grace_period_fails(tree: Path) -> None:
    edit(
        tree / "base" / "recommender.yaml",
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSeconds: 15",
    )
    rc, summary, out = run_check(tree, "--no-scan")
    assert rc == 1
    assert summary["project_errors"] >= 1 and "terminationGracePeriodSeconds" in out, out


def test_unrenderable_overlay_fails(tree: Path) -> None:
    edit(
        tree / "overlays" / "dev" / "kustomization.yaml",
        "  - model-stores.yaml\n",
        "  - model-stores.yaml\n  - does-not-exist.yaml\n",
    )
    rc, summary, _ = run_check(tree, "--no-scan")
    assert rc == 1
    assert summary["render_errors"] == 1 and summary["rendered"] == 0


def test_policy_scanner_failure_fails(tree: Path) -> None:
    """A writable root filesystem on TF Serving passes the schema but not checkov."""
    path = tree / "base" / "tfserving.yaml"
    edit(path, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
    rc, summary, out = run_check(tree)
    assert rc == 1
    assert summary["schema_errors"] == 0
    assert summary["policy_failed"] >= 1 and "CKV_K8S_22" in out, out
