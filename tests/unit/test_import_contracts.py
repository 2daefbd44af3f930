"""The layer rules in pyproject's ``[tool.importlinter]`` hold, and a broken one fails.

``make lint`` runs ``lint-imports``; these tests pin that the contracts are there, that
the tree keeps them, and that each kind of wall really stops a violation (a contract
that cannot fail would be worse than none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recsys", "recsys_tools", "services", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and the config, to break on purpose."""
    root = tmp_path_factory.mktemp("layers")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_at_least_five_contracts_of_the_three_kinds() -> None:
    contracts = _contracts()
    assert len(contracts) >= 5
    assert {"layers", "forbidden", "independence"} <= {str(c["type"]) for c in contracts}


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a pure core reaching for a transport
        ("services/events/core.py", "import grpc", "Pure cores import no gRPC"),
        # one service importing another
        (
            "services/events/core.py",
            "import services.recommender.model",
            "No service imports another service",
        ),
        # the runtime library importing the tooling
        ("recsys/settings.py", "import recsys_tools.cli", "The runtime library imports neither"),
        # TensorFlow outside the sentiment service
        ("recsys/log.py", "import tensorflow", "Only the sentiment service imports TensorFlow"),
        # a service talking to Redis around the store
        ("services/events/__main__.py", "import redis", "Only the store talks to Redis"),
    ],
)
def test_a_deliberate_violation_breaks_its_contract(
    tree_copy: Path, module: str, line: str, broken: str
) -> None:
    path = tree_copy / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # deliberate violation\n")
    try:
        result = _lint(tree_copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    report = result.stdout.split("Broken contracts", 1)[-1]
    assert broken in report, result.stdout
