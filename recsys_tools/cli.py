"""The ``recsys`` command line: one entry point, subcommands registered per area.

Each area (infrastructure, data, each service) owns a ``register(subparsers)``
function next to its code, so adding a command never touches the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from recsys.errors import RecsysError

# Modules exposing ``register(subparsers: argparse._SubParsersAction) -> None``.
# A module that is missing (an optional extra not installed) is skipped.
COMMAND_MODULES = (
    "recsys_tools.infra.cli",
    "recsys_tools.data.cli",
    "recsys_tools.demo",
    "recsys_tools.commands.auth",
    "recsys_tools.commands.events",
    "recsys_tools.commands.kafka_acls",
    "recsys_tools.commands.onboarding",
    "recsys_tools.commands.recommender",
    "recsys_tools.commands.redis_acl",
    "recsys_tools.commands.serve",
    "recsys_tools.commands.sentiment",
    "recsys_tools.client",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description="Real-time recommendation platform command line."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name.startswith(exc.name) or exc.name == name):
                continue  # area not present in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
