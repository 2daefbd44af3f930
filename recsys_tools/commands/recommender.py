"""``recsys train`` and ``recsys evaluate``: the recommender's offline commands.

Each command is one ``_add_<name>`` function registered from :func:`register`; a new command
(e.g. the server) adds its own function and one line there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from recsys.errors import ConfigError
from recsys.settings import redacted_url
from recsys.store.keys import DEFAULT_PREFIX

log = logging.getLogger(__name__)


def _add_weighting_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults: the protocol-1 validation choice)")
    g.add_argument("--factors", type=int, default=None)
    g.add_argument("--regularization", type=float, default=None)
    g.add_argument("--iterations", type=int, default=None)
    g.add_argument("--weighting", choices=("none", "bm25", "log"), default=None)
    g.add_argument("--alpha", type=float, default=None, help="confidence scale")
    g.add_argument("--bm25-k1", type=float, default=None)
    g.add_argument("--bm25-b", type=float, default=None)
    g.add_argument("--threads", type=int, default=None, help="ALS threads (default 2)")
    g.add_argument("--als-seed", type=int, default=None, help="ALS random state")


def _config_from_args(args: argparse.Namespace) -> Any:
    from services.recommender.training import ML100K_TUNED, TrainConfig

    params: dict[str, Any] = {}
    for arg, key in (
        ("factors", "factors"),
        ("regularization", "regularization"),
        ("iterations", "iterations"),
        ("weighting", "scheme"),
        ("alpha", "alpha"),
        ("bm25_k1", "k1"),
        ("bm25_b", "b"),
        ("threads", "num_threads"),
        ("als_seed", "random_state"),
    ):
        value = getattr(args, arg, None)
        if value is not None:
            params[key] = value
    return TrainConfig().with_params(**{**ML100K_TUNED, **params})


def setup_logging(verbose: bool) -> None:
    """Shared by the training and onboarding commands: one log format for every run."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # implicit warns when OpenBLAS is threaded; training pins BLAS to one thread itself.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# ---------------------------------------------------------------------------- train
def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="fit ALS on a data set or on the Redis interaction features; publish a model",
        description="Build the user-item matrix, fit implicit ALS and publish a versioned "
        "model atomically into the model store (RECSYS_MODEL_DIR, else MODEL_STORE, "
        "default ./models): the directory the recommender watches.",
    )
    p.add_argument("--source", choices=("dataset", "csv", "redis", "log"), default="dataset")
    p.add_argument("--dataset", default="ml-100k", help="data set name for --source dataset")
    p.add_argument("--csv", help="user,item,weight file for --source csv")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--key-prefix", default=os.environ.get("REDIS_KEY_PREFIX", DEFAULT_PREFIX))
    p.add_argument(
        "--items-from",
        default=None,
        help="data set whose item metadata (genres) to attach, e.g. ml-100k (redis/csv sources)",
    )
    p.add_argument(
        "--model-dir",
        "--store",
        dest="store",
        default=os.environ.get("RECSYS_MODEL_DIR") or os.environ.get("MODEL_STORE", "models"),
        help="model store to publish into (the recommender's RECSYS_MODEL_DIR)",
    )
    p.add_argument(
        "--no-forgotten-check",
        action="store_true",
        help="do not read the forgotten users from Redis (--redis-url) to leave them out: "
        "only for offline experiments, the model may then contain users who asked to be "
        "forgotten",
    )
    p.add_argument("--no-publish-current", action="store_true", help="do not move LATEST")
    p.add_argument("--keep", type=int, default=5, help="versions to keep in the store")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--config",
        default=None,
        help="a `recsys tune` config: its family and hyperparameters replace the defaults "
        "(the model flags below still override)",
    )
    from recsys_tools.commands.onboarding import add_log_args

    add_log_args(p, required=False)
    _add_weighting_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_cmd_train)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (docs/model.md, The Spark engine)")
    g.add_argument(
        "--engine",
        choices=("implicit", "spark"),
        default="implicit",
        help="what fits the factors: implicit in this process (default) or Spark MLlib ALS "
        "(needs the [spark] extra and Java 17)",
    )
    g.add_argument(
        "--spark-master",
        default=os.environ.get("SPARK_MASTER") or None,
        help="Spark master URL (default $SPARK_MASTER, else local[2]; under spark-submit, "
        "spark-submit's)",
    )
    g.add_argument(
        "--spark-driver-memory",
        default=os.environ.get("SPARK_DRIVER_MEMORY") or "1g",
        help="driver memory in local mode (default $SPARK_DRIVER_MEMORY, else 1g)",
    )
    g.add_argument(
        "--spark-reg-param",
        type=float,
        default=None,
        help="Spark's regParam as is (default: --regularization / mean interactions per user)",
    )


def _engine_from_args(args: argparse.Namespace) -> Any:
    """None for the default engine; the Spark one is imported only when asked for, so the
    recommender's image and the default training never load pyspark."""
    if getattr(args, "engine", "implicit") != "spark":
        return None
    try:
        from services.recommender.spark_als import SparkALS, SparkSettings
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigError(f"--engine spark needs the [spark] extra: {exc}") from None
    return SparkALS(
        SparkSettings(
            master=args.spark_master,
            driver_memory=args.spark_driver_memory,
            reg_param=args.spark_reg_param,
        )
    )


def _load_items(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    from services.recommender.training import items_from_movielens

    return items_from_movielens(_load_dataset(name).items)


def _load_dataset(name: str) -> Any:
    if name != "ml-100k":
        raise ConfigError(f"unknown data set {name!r}; available: ml-100k")
    from recsys_tools.data.movielens import load_ml100k

    return load_ml100k()


def _forgotten_users(args: argparse.Namespace) -> set[str]:
    """The users recorded as forgotten in the store, which no model may contain.

    Read for every source, a data set included (it never forgets): a Redis that cannot
    be reached fails the training rather than publishing a model with those users in it.
    """
    if args.no_forgotten_check:
        log.warning("--no-forgotten-check: users who asked to be forgotten are not left out")
        return set()
    from recsys.store import open_store

    try:
        store = open_store(args.redis_url, prefix=args.key_prefix)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}. `recsys train` leaves out the users recorded as forgotten there; "
            "--no-forgotten-check skips that check (offline experiments only)"
        ) from None
    try:
        return set(store.forgotten_users())
    finally:
        store.close()


def _cmd_train(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from recsys.weights import EventWeights
    from services.recommender import artifact, training

    config = _config_from_args(args)
    engine = _engine_from_args(args)
    family_config = None
    if args.config:
        from recsys_tools.commands.onboarding import train_config_from

        als_config, family_config = train_config_from(args.config, args)
        config = als_config or config
    started = time.perf_counter()
    forgotten = _forgotten_users(args)
    items: dict[str, Any]
    if args.source == "dataset":
        ml = _load_dataset(args.dataset)
        items = training.items_from_movielens(ml.items)
        inter = ml.interactions
        rating_weights = EventWeights().rating_weights(inter.ratings)
        data = training.build_matrix(
            inter.user_ids, inter.item_ids, rating_weights, item_ids=sorted(items, key=_id_key)
        )
    elif args.source == "csv":
        if not args.csv:
            raise ConfigError("--source csv needs --csv PATH")
        users, item_list, weights = training.read_csv(args.csv)
        items = _load_items(args.items_from)
        catalogue = sorted(set(item_list) | set(items), key=_id_key)
        data = training.build_matrix(users, item_list, weights, item_ids=catalogue)
    elif args.source == "log":
        if not args.data:
            raise ConfigError("--source log needs --data FILE (and --columns)")
        from recsys_tools.commands.onboarding import read_log_args

        log_data = read_log_args(args, progress=not args.no_progress)
        items = _load_items(args.items_from)
        catalogue = sorted(set(log_data.items) | set(items), key=_id_key)
        data = training.build_matrix(
            log_data.users, log_data.items, log_data.weights, item_ids=catalogue
        )
    else:
        from recsys.redis_io import make_redis
        from recsys.store.keys import KeySchema

        client = make_redis(args.redis_url)
        try:
            schema = KeySchema(args.key_prefix)
            rows = [r for r in training.read_redis_weights(client, schema) if r[0] not in forgotten]
        finally:
            client.close()
        if not rows:
            raise ConfigError(
                f"no weights hashes under prefix {args.key_prefix!r} at "
                f"{redacted_url(args.redis_url)}"
            )
        items = _load_items(args.items_from)
        seen_items = {i for _, w in rows for i in w}
        catalogue = sorted(seen_items | set(items), key=_id_key)
        data = training.matrix_from_user_weights(rows, item_ids=catalogue)
    data = training.drop_users(data, forgotten)
    load_s = time.perf_counter() - started
    model: Any
    if family_config is not None and family_config.family != "als":
        if engine is not None:
            raise ConfigError(
                f"--engine spark fits ALS; the config's family is {family_config.family!r}"
            )
        from services.recommender import item_model

        model = item_model.train(
            data.matrix, data.user_ids, data.item_ids, family_config, items=items
        )
    else:
        model = training.train(
            data, config, items=items, show_progress=not args.no_progress, engine=engine
        )
    train_s = float(model.config["train_s"])
    model.metrics.update({"load_s": round(load_s, 3), "train_s": round(train_s, 3)})
    model.config["source"] = args.source
    if family_config is not None:
        model.config["family"] = family_config.family
        model.config["tune_config"] = str(args.config)
    # Provenance for an audit: None marks a model trained without the forgotten check.
    model.config["forgotten_users"] = None if args.no_forgotten_check else len(forgotten)
    saving = time.perf_counter()
    version = model.save(args.store, make_current=not args.no_publish_current)
    save_s = time.perf_counter() - saving
    artifact.prune(args.store, keep=args.keep)
    print(
        json.dumps(
            {
                "version": version,
                "store": str(args.store),
                "users": model.n_users,
                "items": model.n_items,
                "interactions": int(model.config["nnz"]),
                "engine": model.config.get("engine"),
                "forgotten_users": model.config["forgotten_users"],
                "train_s": round(train_s, 3),
                "train_cpu_s": round(float(model.config["train_cpu_s"]), 3),
                "phases_s": model.config["train_phases_s"],
                "load_s": round(load_s, 3),
                "save_s": round(save_s, 3),
            }
        )
    )
    return 0


def _id_key(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


# ------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="offline evaluation: random / temporal / replay protocols with baselines",
        description="Runs one protocol (see docs/evaluation.md). Hyperparameters are searched "
        "on a validation split carved out of the training part unless --no-tune. Ends with "
        "one JSON line of test metrics.",
    )
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument(
        "--protocol",
        choices=("random", "temporal", "replay", "holdout", "timecut"),
        default=None,
        help="random, temporal, replay (a --dataset; default random) or holdout, timecut "
        "(a --data log; default holdout); docs/evaluation.md",
    )
    from recsys_tools.commands.onboarding import add_log_args

    add_log_args(p, required=False)
    p.add_argument("--config", default=None, help="with --data: a `recsys tune` config, "
                   "scored as the model 'tuned'")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-tune", action="store_true", help="use the given/default parameters")
    p.add_argument("--seed", type=int, default=42, help="split seed")
    p.add_argument(
        "--folds",
        type=_positive_int,
        default=None,
        help="K-fold cross-validation: K disjoint random test parts, the search rerun on each "
        "fold, metrics averaged (random protocol only; default 5 for random, 1 otherwise; "
        "1 = the single 80/20 split)",
    )
    p.add_argument("--table", help="write the search table (JSON) to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    _add_weighting_args(p)
    p.set_defaults(func=_cmd_evaluate)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _folds_for(args: argparse.Namespace) -> int:
    """Five folds are the random protocol's headline; the others define no folds."""
    folds: int = args.folds if args.folds is not None else (5 if args.protocol == "random" else 1)
    if folds > 1 and args.protocol != "random":
        raise ConfigError(
            f"--folds {folds}: cross-validation is only defined for --protocol random"
        )
    return folds


def _print_fold(fold: int, folds: int, result: Any) -> None:
    """Progress of a K-fold run: each fold's search and test metrics as soon as it ends."""
    details = result.details
    print(
        f"# fold {fold + 1}/{folds}: {details['n_train']} train / {details['n_test']} test "
        f"ratings, {details['n_test_users']} test users"
    )
    _print_search(result)
    for name, metrics in result.models.items():
        figures = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"# fold {fold + 1}/{folds} test {name}: {figures}")
    sys.stdout.flush()


def _print_search(result: Any) -> None:
    for s in result.searches:
        metric = next(k for k in s.table[0] if k not in s.best and k != "seconds")
        print(f"# search {s.name} ({len(s.table)} configurations, validation {metric})")
        for row in sorted(s.table, key=lambda r: -r[metric])[:10]:
            params = ", ".join(f"{k}={v}" for k, v in row.items() if k not in (metric, "seconds"))
            print(f"#   {metric}={row[metric]:.4f}  {params}")
        print(f"# chosen {s.name}: {s.best}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.data is not None:
        from recsys_tools.commands.onboarding import evaluate_log

        args.protocol = args.protocol or "holdout"
        return evaluate_log(args)
    args.protocol = args.protocol or "random"
    if args.protocol not in ("random", "temporal", "replay"):
        raise ConfigError(f"--protocol {args.protocol} evaluates a log: give --data FILE")
    setup_logging(args.verbose)
    from threadpoolctl import threadpool_limits

    from services.recommender import evaluation

    folds = _folds_for(args)
    log_ = evaluation.event_log_from_movielens(_load_dataset(args.dataset))
    base = _config_from_args(args)
    tune = not args.no_tune
    started = time.perf_counter()
    # Per-request maths on tiny matrices: threaded BLAS only adds contention.
    with threadpool_limits(1, "blas"):
        if args.protocol == "replay":
            result = evaluation.run_replay(log_, base=base, tune=tune)
        else:
            result = evaluation.run_offline(
                args.protocol,
                log_,
                base=base,
                tune=tune,
                seed=args.seed,
                folds=folds,
                on_fold=_print_fold if folds > 1 else None,
            )
    if folds > 1:
        for name, metrics in result.models.items():
            spread = result.std[name]
            figures = ", ".join(f"{k}={v:.4f}±{spread[k]:.4f}" for k, v in metrics.items())
            print(f"# mean over {folds} folds {name}: {figures}")
    else:
        _print_search(result)
    print(f"# details: {json.dumps(result.details, default=str)}")
    print(f"# elapsed {time.perf_counter() - started:.1f}s")
    if args.table:
        tables: Any = [_search_tables(r) for r in result.fold_results] if folds > 1 else None
        with open(args.table, "w", encoding="utf-8") as fh:
            json.dump(
                {"folds": tables} if tables is not None else _search_tables(result),
                fh,
                indent=1,
                default=str,
            )
    print(json.dumps(result.summary()))
    return 0


def _search_tables(result: Any) -> dict[str, Any]:
    return {s.name: {"best": s.best, "table": s.table} for s in result.searches}


def register(subparsers: Any) -> None:
    _add_train(subparsers)
    _add_evaluate(subparsers)
