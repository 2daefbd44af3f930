"""``make bench``: every system benchmark in turn, their headline JSON lines in one.

The system charts come from ``bench.system`` (docs/img/system_*.png).
Each benchmark runs as its own process (``python -m bench.<name>``, ``--quick`` unless
``--full``), so one failing does not stop the others; its last stdout line is its JSON
headline. The soak also draws its memory chart into ``docs/img/soak_memory.png`` and
this driver draws the per-service memory bars into ``docs/img/memory_per_service.png``.

    python -m bench.run_all [--full] [--only NAME ...]

Ends with one JSON line: {"<benchmark>": {its headline} | {"error": ...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"

BENCHMARKS: dict[str, list[str]] = {
    "system": [],
    "events_throughput": ["--brokers", "apache"],
    "recommend_load": [],
    "freshness": [],
    "replay_pipeline": [],
    "soak": ["--plot", str(IMG / "soak_memory.png")],
}


def run(name: str, extra: list[str], full: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", f"bench.{name}", *([] if full else ["--quick"]), *extra]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in done.stdout.strip().splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}", "output": done.stdout[-500:]}
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def memory_chart(soak: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = soak.get("memory") or {}
    names = list(memory)
    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=100)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [memory[n]["start_mb"] for n in names], 0.4,
           label="after warm-up")  # fmt: skip
    ax.bar([i + 0.2 for i in x], [memory[n]["end_mb"] for n in names], 0.4, label="at the end")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"Memory per process, soak of {soak.get('minutes')} min at full speed")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full sizes (tens of minutes)")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS))
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for name, extra in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        results[name] = run(name, extra, args.full)
    if "memory" in results.get("soak", {}):
        memory_chart(results["soak"], IMG / "memory_per_service.png")
    print(json.dumps(results), flush=True)
    return 0 if not any("error" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
