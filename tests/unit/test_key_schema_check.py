"""scripts/check_key_schema.py: the tree passes, and a Redis key spelled by hand fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_key_schema.py"


def run(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_the_tree_spells_every_key_through_the_schema_module() -> None:
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "line",
    [
        'key = f"{prefix}:{{u:{user_id}}}:weights"',
        'key = "rs:{g}:trending"',
        'KEY_PREFIX = "rs"',
        'pattern = f"{self.key_prefix}:*"',
        'key = schema_prefix + ":user:" + user_id',
        'key = ":".join([key_prefix, "item", item_id])',
        'key = "%s:seen" % key_prefix',
        'key = "{}:{}".format(args.key_prefix, user_id)',
    ],
)
def test_a_hand_built_key_fails_with_file_and_line(tmp_path: Path, line: str) -> None:
    module = tmp_path / "hand_built.py"
    module.write_text(f'"""A module."""\n\n\ndef lookup(user_id: str) -> str:\n    {line}\n')
    result = run(module)
    assert result.returncode == 1, result.stdout
    assert f"{module}:5:" in result.stdout


def test_prose_about_keys_and_unrelated_colons_pass(tmp_path: Path) -> None:
    module = tmp_path / "prose.py"
    module.write_text(
        '"""Per-user keys carry ``{u:<user>}``; globals carry ``{g}``."""\n\n'
        "# rs:{u:alice}:weights is what a key looks like\n"
        "def describe(prefix: str, host: str, port: int) -> str:\n"
        '    """Keys look like ``rs:{u:x}:seen``."""\n'
        '    return f"prefix {prefix!r} at {host}:{port}" + "rs-extra" + "https://x:1"\n'
    )
    result = run(module)
    assert result.returncode == 0, result.stdout
