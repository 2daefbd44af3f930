"""Fail when a Redis key, SCAN pattern or the default key prefix is spelled outside the schema.

``recsys/store/keys.py`` (``KeySchema``, ``DEFAULT_PREFIX``) is the one place that knows
what a key looks like (docs/redis-schema.md). A key built by hand elsewhere keeps working
until the layout changes, then silently reads or writes the wrong key; this check makes
that a lint failure instead. It reads the source (``ast``), so comments and docstrings may
still talk about keys; string literals and f-strings may not contain:

- a hash tag of the schema: ``{u:`` (per user) or ``{g}`` (global);
- ``:user:`` or ``:item:`` (the usual shape of a hand-made key);
- the default prefix itself, alone or as ``<prefix>:...``;
- a prefix joined to ``:`` by hand: ``f"{key_prefix}:..."``, ``prefix + ":"``,
  ``":".join([prefix, ...])``, ``"%s:..." % prefix``, ``"{}:...".format(prefix)``
  (any expression whose source mentions ``prefix``).

    python scripts/check_key_schema.py            # recsys/, services/, recsys_tools/
    python scripts/check_key_schema.py PATH ...   # files or directories

Exit status 1 with ``file:line: reason`` per hit, 0 when clean.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("recsys", "services", "recsys_tools")
SCHEMA_MODULE = ROOT / "recsys" / "store" / "keys.py"

if str(ROOT) not in sys.path:  # run as a script: the repository's packages first
    sys.path.insert(0, str(ROOT))

from recsys.store.keys import DEFAULT_PREFIX  # noqa: E402

HASH_TAG = re.compile(r"\{u:|\{g\}")
KEY_PARTS = re.compile(r":(?:user|item):")
# '%s:' / '{}:' / '{0}:' / '{name}:' templates, filled in with a prefix by % or .format
TEMPLATE_COLON = re.compile(r"(?:%s|\{[^{}]*\}):")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose, allowed to name keys)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                out.add(id(body[0].value))
    return out


def _mentions_prefix(node: ast.AST) -> bool:
    return "prefix" in ast.unparse(node).lower()


def _literal_hits(text: str) -> Iterator[str]:
    if HASH_TAG.search(text):
        yield "a hash tag of the key schema"
    if KEY_PARTS.search(text):
        yield "a hand-made key (':user:' / ':item:')"
    if text == DEFAULT_PREFIX or text.startswith(f"{DEFAULT_PREFIX}:"):
        yield f"the default key prefix {DEFAULT_PREFIX!r} (use DEFAULT_PREFIX)"


def _starts_with_colon(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.startswith(":")
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        return isinstance(first, ast.Constant) and str(first.value).startswith(":")
    return False


def _node_hits(node: ast.AST, docstrings: set[int]) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if id(node) not in docstrings:
            yield from _literal_hits(node.value)
    elif isinstance(node, ast.JoinedStr):
        values = node.values
        for before, after in itertools.pairwise(values):
            if (
                isinstance(before, ast.FormattedValue)
                and _mentions_prefix(before.value)
                and _starts_with_colon(after)
            ):
                yield "a key prefix joined to ':' in an f-string"
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        if _mentions_prefix(node.left) and _starts_with_colon(node.right):
            yield "a key prefix joined to ':' with +"
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        template = node.left
        if (
            isinstance(template, ast.Constant)
            and isinstance(template.value, str)
            and TEMPLATE_COLON.search(template.value)
            and _mentions_prefix(node.right)
        ):
            yield "a key prefix joined to ':' with %"
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        owner, method = node.func.value, node.func.attr
        if not (isinstance(owner, ast.Constant) and isinstance(owner.value, str)):
            return
        arguments = [*node.args, *(k.value for k in node.keywords)]
        if method == "join" and owner.value == ":" and any(map(_mentions_prefix, arguments)):
            yield "a key prefix joined to ':' with str.join"
        if (
            method == "format"
            and TEMPLATE_COLON.search(owner.value)
            and any(map(_mentions_prefix, arguments))
        ):
            yield "a key prefix joined to ':' with str.format"


def check_source(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, reason) of every key spelled in ``source``."""
    tree = ast.parse(source, filename=filename)
    docstrings = _docstrings(tree)
    hits = {
        (getattr(node, "lineno", 0), reason)
        for node in ast.walk(tree)
        for reason in _node_hits(node, docstrings)
    }
    return sorted(hits)


def python_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)
        elif path.suffix == ".py":
            yield path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or directories to check")
    args = parser.parse_args(argv)
    paths: list[Path] = args.paths or [ROOT / name for name in SCANNED]
    found = 0
    for path in python_files(paths):
        if path.resolve() == SCHEMA_MODULE:
            continue
        for line, reason in check_source(path.read_text(encoding="utf-8"), str(path)):
            shown = (
                path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
            )
            print(f"{shown}:{line}: {reason}; build keys with recsys.store.keys.KeySchema")
            found += 1
    if found:
        print(f"{found} Redis key(s) spelled outside recsys/store/keys.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
