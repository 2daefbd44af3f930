"""Generate the Python stubs (and their .pyi type stubs) for every proto in ``protos/``.

One generator for the whole repository so that services never carry private
copies of the stubs. ``--check`` regenerates into a temporary directory and fails
when the committed stubs differ, which is how CI catches a stale checkout.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
APIS = ("events", "feedback", "recommender", "sentiment")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every proto, writing packages under ``out_dir``; return generated files."""
    import grpc_tools
    from grpc_tools import protoc

    # protoc finds the mypy plugins on PATH; they live next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated: list[Path] = []
    for api in APIS:
        pkg = out_dir / "recsys" / api / "v1"
        for init in (out_dir / "recsys" / api / "__init__.py", pkg / "__init__.py"):
            init.touch()
        generated.extend(sorted(p for p in pkg.iterdir() if p.is_file()))
        generated.append(out_dir / "recsys" / api / "__init__.py")
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = generate(out)
        stale = []
        for f in files:
            rel = f.relative_to(out)
            dest = ROOT / rel
            if args.check:
                if not dest.exists() or not filecmp.cmp(f, dest, shallow=False):
                    stale.append(str(rel))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
        if args.check and stale:
            print("stale generated stubs (run `make protos`): " + ", ".join(stale), file=sys.stderr)
            return 1
    print("protos: check ok" if args.check else f"protos: generated {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
