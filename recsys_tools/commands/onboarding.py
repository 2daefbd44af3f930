"""``recsys import``, ``recsys tune`` and ``recsys evaluate --data``: a shop's own log.

``import`` checks and normalises a log or catalogue (recsys_tools/data/interactions.py);
``evaluate --data`` runs the issue-13 ``holdout`` (or ``timecut``) protocol on any log with the
popularity, BM25 item-kNN and untuned-ALS baselines in the same run (and ``tuned`` with
``--config``); ``tune`` searches model families on a validation split of the training part and
writes the config that ``recsys train --config`` and ``evaluate --config`` read.
docs/evaluation.md ("Your own log") documents all three.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError
from recsys_tools.commands.recommender import setup_logging as _setup_logging

log = logging.getLogger(__name__)


def add_log_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The options every command reading an interaction log shares."""
    p.add_argument("--data", required=required, help="interaction log (CSV, Parquet, JSON lines)")
    p.add_argument(
        "--columns",
        default=None,
        help="user=COL,item=COL,time=COL[,weight=COL|event=COL] (default: the normalised "
        "columns user,item,time,weight that `recsys import` writes)",
    )
    p.add_argument("--format", choices=("csv", "parquet", "jsonl"), default=None,
                   help="input format (default: from the file name)")  # fmt: skip
    p.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        default="stop",
        help="a bad row stops the command (default) or is skipped and reported",
    )


def read_log_args(args: argparse.Namespace, *, progress: bool = True) -> Any:
    """Read ``--data`` into the columns the pure evaluation code takes; skipped rows are
    reported on stderr."""
    from recsys_tools.data.interactions import parse_columns, read_log

    columns = parse_columns(args.columns)
    data, report = read_log(
        args.data, columns, fmt=args.format, on_error=args.on_error, progress=progress
    )
    if report.skipped:
        print(f"# skipped {report.skipped} bad rows of {args.data}:", file=sys.stderr)
        for err in report.errors:
            print(f"#   {err}", file=sys.stderr)
    if not len(data):
        raise ConfigError(f"{args.data}: no usable row")
    return data


def to_holdout_log(data: Any) -> Any:
    from services.recommender.evaluation.holdout import Log

    return Log.from_columns(data.users, data.items, data.times, data.weights)


# --------------------------------------------------------------------------- import
def _add_import(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="check and normalise an interaction log or a catalogue file",
        description="Reads CSV, Parquet or JSON lines through a column mapping, checks every "
        "row (a bad row names its row and column) and writes the normalised file the other "
        "commands read (docs/evaluation.md, 'Your own log').",
    )
    what = p.add_subparsers(dest="what", required=True)
    i = what.add_parser("interactions", help="an interaction log → normalised CSV")
    i.add_argument("file")
    i.add_argument("--out", required=True, help="normalised CSV to write")
    i.add_argument("--columns", required=True,
                   help="user=COL,item=COL,time=COL[,weight=COL|event=COL]")  # fmt: skip
    i.add_argument("--format", choices=("csv", "parquet", "jsonl"), default=None)
    i.add_argument("--on-error", choices=("skip", "stop"), default="stop")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=_cmd_import_interactions)
    c = what.add_parser("catalogue", help="a catalogue file → normalised JSON lines")
    c.add_argument("file")
    c.add_argument("--out", required=True, help="normalised JSON lines to write")
    c.add_argument("--columns", default=None,
                   help="id=COL[,title=COL,categories=COL,attributes=COL,price=COL] "
                   "(default: columns of those names)")  # fmt: skip
    c.add_argument("--format", choices=("csv", "parquet", "jsonl"), default=None)
    c.add_argument("--on-error", choices=("skip", "stop"), default="stop")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_cmd_import_catalogue)


def _print_report(kind: str, args: argparse.Namespace, report: Any) -> None:
    for err in report.errors:
        print(f"# skipped {err}", file=sys.stderr)
    if report.skipped > len(report.errors):
        print(f"# ... and {report.skipped - len(report.errors)} more", file=sys.stderr)
    print(json.dumps({"import": kind, "out": str(args.out), **report.to_dict()}))


def _cmd_import_interactions(args: argparse.Namespace) -> int:
    from recsys_tools.data.interactions import parse_columns, read_log, write_log

    data, report = read_log(
        args.file,
        parse_columns(args.columns),
        fmt=args.format,
        on_error=args.on_error,
        progress=not args.no_progress,
    )
    write_log(args.out, data)
    _print_report("interactions", args, report)
    return 0


def _cmd_import_catalogue(args: argparse.Namespace) -> int:
    from recsys_tools.data.interactions import (
        parse_catalogue_columns,
        read_catalogue,
        write_catalogue,
    )

    items, report = read_catalogue(
        args.file,
        parse_catalogue_columns(args.columns),
        fmt=args.format,
        on_error=args.on_error,
        progress=not args.no_progress,
    )
    write_catalogue(args.out, items)
    _print_report("catalogue", args, report)
    return 0


# ------------------------------------------------------------------ evaluate --data
def evaluate_log(args: argparse.Namespace) -> int:
    """``recsys evaluate --data``: the baselines (and ``tuned``) on one protocol, one run."""
    _setup_logging(args.verbose)
    from services.recommender import families
    from services.recommender.evaluation import holdout

    protocol = args.protocol if args.protocol in holdout.HOLDOUT_PROTOCOLS else None
    if protocol is None:
        raise ConfigError(
            f"--data evaluates with --protocol {' or '.join(holdout.HOLDOUT_PROTOCOLS)}, "
            f"not {args.protocol!r}"
        )
    started = time.perf_counter()
    log_ = to_holdout_log(read_log_args(args, progress=not args.no_progress))
    models: dict[str, Any] = {
        "popularity": families.fit_popularity,
        "item_knn": lambda m: families.fit_item_knn(m, {}),
        "als_untuned": families.fit_als_untuned,
    }
    if args.config:
        config = load_config(args.config)
        models["tuned"] = lambda m: families.build(config, m)
        print(f"# tuned = {json.dumps(config.to_dict())}")

    def show(name: str, metrics: dict[str, float], seconds: float) -> None:
        figures = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"# {name}: {figures} ({seconds:.1f}s)")
        sys.stdout.flush()

    result = holdout.run(log_, protocol, models, on_model=show)
    print(f"# {len(log_)} interactions, elapsed {time.perf_counter() - started:.1f}s")
    print(json.dumps(result))
    return 0


def load_config(path: str | Path) -> Any:
    """A config ``recsys tune`` wrote (its family and parameters; the rest is a record)."""
    from services.recommender.families import FamilyConfig

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    return FamilyConfig.from_dict(data)


def train_config_from(path: str | Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """(ALS :class:`training.TrainConfig` or None, the config's :class:`FamilyConfig`) for
    ``recsys train --config``: an ALS config with any model flag given on the command line on
    top; an item-item family takes its parameters from the config alone."""
    from services.recommender.families import als_train_config

    config = load_config(path)
    if config.family != "als":
        return None, config
    params = dict(config.params)
    for arg, key in (
        ("factors", "factors"),
        ("regularization", "regularization"),
        ("iterations", "iterations"),
        ("weighting", "scheme"),
        ("alpha", "alpha"),
        ("bm25_k1", "k1"),
        ("bm25_b", "b"),
        ("als_seed", "random_state"),
    ):
        value = getattr(args, arg, None)
        if value is not None:
            params[key] = value
    train_config = als_train_config(params)
    if getattr(args, "threads", None) is not None:
        from dataclasses import replace

        train_config = replace(train_config, num_threads=args.threads)
    return train_config, config


# ----------------------------------------------------------------------------- tune
def _add_tune(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="search model families and hyperparameters on your log; write a config",
        description="A time-boxed Optuna TPE search over model families (ALS, EASE, RP3beta, "
        "BM25 item-kNN) and their hyperparameters, scored by NDCG@10 on a validation split "
        "carved out of the protocol's training part only. Writes the config that "
        "`recsys train --config` and `recsys evaluate --config` read.",
    )
    add_log_args(p)
    p.add_argument("--time-budget", type=float, required=True, help="seconds, splits included")
    p.add_argument("--out", required=True, help="config JSON to write")
    p.add_argument("--protocol", choices=("holdout", "timecut"), default="holdout")
    p.add_argument(
        "--families",
        default=None,
        help="a comma-separated subset of als,ease,rp3beta,item_knn (default: all)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    from services.recommender.evaluation import tuning
    from services.recommender.families import FAMILIES

    if args.time_budget <= 0:
        raise ConfigError("--time-budget must be positive")
    started = time.monotonic()
    log_ = to_holdout_log(read_log_args(args, progress=not args.no_progress))
    left = args.time_budget - (time.monotonic() - started)
    result = tuning.tune(
        log_,
        protocol=args.protocol,
        time_budget_s=left,
        families_=[f.strip() for f in (args.families or ",".join(FAMILIES)).split(",") if f],
        seed=args.seed,
        progress=not args.no_progress,
    )
    out = result.to_dict()
    out["data"] = {"file": str(args.data), "columns": args.columns, "protocol": args.protocol}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    elapsed = time.monotonic() - started
    for family in sorted({t["family"] for t in result.trials}):
        best = max(t["ndcg@10"] for t in result.trials if t["family"] == family)
        n = sum(t["family"] == family for t in result.trials)
        print(f"# {family}: best validation ndcg@10 {best:.4f} over {n} trials")
    print(
        json.dumps(
            {
                **result.config.to_dict(),
                "validation_ndcg@10": result.validation_ndcg,
                "trials": len(result.trials),
                "elapsed_s": round(elapsed, 1),
                "out": str(args.out),
            }
        )
    )
    return 0


def register(subparsers: Any) -> None:
    _add_import(subparsers)
    _add_tune(subparsers)
