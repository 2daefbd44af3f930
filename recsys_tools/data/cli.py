"""``recsys data``: fetch the data sets, show where they live, summarise them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recsys_tools.data.checksums import DATASETS
from recsys_tools.data.fetch import data_dir, dataset_dir, fetch


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "data", help="fetch and inspect the data sets", description=__doc__
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    def common(p: argparse.ArgumentParser, with_all: bool = True) -> None:
        p.add_argument(
            "--dataset",
            choices=(*DATASETS, "all") if with_all else DATASETS,
            default="all" if with_all else None,
            help="which data set (default: all)" if with_all else "a data set's own directory",
        )
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="cache directory (default: $RECSYS_DATA_DIR or ~/.cache/recsys/data)",
        )

    p_fetch = sub.add_parser(
        "fetch",
        help="download, verify and extract the data sets (does nothing if already verified)",
    )
    common(p_fetch)
    p_fetch.add_argument(
        "--offline",
        action="store_true",
        help="never download: only verify what is there, fail if missing or corrupt",
    )
    p_fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_fetch.set_defaults(func=_cmd_fetch)

    p_path = sub.add_parser("path", help="print the data directory")
    common(p_path, with_all=False)
    p_path.set_defaults(func=_cmd_path)

    p_stats = sub.add_parser("stats", help="load the data sets and print their sizes as JSON")
    common(p_stats)
    p_stats.set_defaults(func=_cmd_stats)

    p_synth = sub.add_parser(
        "synth",
        help="write a synthetic interaction log with known structure (retail or lowrank)",
        description="Seeded synthetic logs for checking `recsys tune` beyond MovieLens "
        "(recsys_tools/data/synthetic_logs.py; docs/evaluation.md, 'Your own log').",
    )
    p_synth.add_argument("kind", choices=("retail", "lowrank"))
    p_synth.add_argument("--out", type=Path, required=True)
    p_synth.add_argument("--users", type=int, default=None)
    p_synth.add_argument("--items", type=int, default=None)
    p_synth.add_argument("--seed", type=int, default=0)
    p_synth.set_defaults(func=_cmd_synth)


def _cmd_fetch(args: argparse.Namespace) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    paths = fetch([args.dataset], data_dir=args.data_dir, progress=progress, offline=args.offline)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    if args.dataset:
        print(dataset_dir(args.dataset, args.data_dir))
    else:
        print(data_dir(args.data_dir))
    return 0


def stats(names: list[str], root: Path | None = None) -> dict[str, Any]:
    """Sizes of each loaded data set: what the docs quote and what a reviewer checks."""
    out: dict[str, Any] = {}
    for name in names:
        if name == "ml-100k":
            from recsys_tools.data.movielens import load_ml100k

            ml = load_ml100k(root)
            inter = ml.interactions
            out[name] = {
                "ratings": len(inter),
                "users": len(set(inter.user_ids.tolist())),
                "items": len(set(inter.item_ids.tolist())),
                "user_rows": len(ml.users),
                "item_rows": len(ml.items),
                "first_timestamp": int(inter.timestamps.min()) if len(inter) else None,
                "last_timestamp": int(inter.timestamps.max()) if len(inter) else None,
            }
        else:
            from recsys_tools.data.sentiment_corpora import (
                load_chinese_reviews,
                load_english_tweets,
            )

            texts = (
                load_chinese_reviews(root) if name == "zh-reviews" else load_english_tweets(root)
            )
            out[name] = {"texts": len(texts), "language": texts.language, **texts.counts()}
    return out


def _cmd_synth(args: argparse.Namespace) -> int:
    from recsys_tools.data import synthetic_logs

    sizes = {k: v for k, v in (("users", args.users), ("items", args.items)) if v is not None}
    make = synthetic_logs.retail if args.kind == "retail" else synthetic_logs.lowrank
    rows = make(args.out, seed=args.seed, **sizes)
    print(
        json.dumps(
            {"out": str(args.out), "rows": rows, "columns": synthetic_logs.COLUMNS[args.kind]}
        )
    )
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    print(json.dumps(stats(names, args.data_dir), sort_keys=True))
    return 0
