"""The generated stubs match the protos (a stale checkout fails here and in CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_apis_are_versioned_packages() -> None:
    protos = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*.proto"))
    assert protos, "no protos found"
    for proto in protos:
        parts = proto.parts
        assert parts[0] == "recsys" and parts[2] == "v1", proto
        text = (ROOT / "protos" / proto).read_text()
        assert f"package recsys.{parts[1]}.v1;" in text
