"""``recsys sentiment train | evaluate | serve | consume``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from services.sentiment.config import DEFAULT_MODEL_DIR, default_model_dir


def _model_dir(args: argparse.Namespace) -> Path:
    return Path(args.model_dir).expanduser() if args.model_dir else default_model_dir()


def _data_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.data_dir).expanduser() if args.data_dir else None


def _train(args: argparse.Namespace) -> int:
    from recsys_tools.data.sentiment_corpora import load_splits
    from services.sentiment.evaluation import subsample
    from services.sentiment.model import ModelConfig, balanced_weights, train

    splits = load_splits(_data_dir(args))
    if args.max_train:
        splits = {k: subsample(s, args.max_train) for k, s in splits.items()}
    train_texts = [t for s in splits.values() for t in s.train_texts]
    train_labels = _concat([s.train_labels for s in splits.values()])
    val_texts = [t for s in splits.values() for t in s.val_texts]
    val_labels = _concat([s.val_labels for s in splits.values()])
    per_language = ", ".join(f"{k}: {len(s.train_texts)}" for k, s in splits.items())
    defaults = ModelConfig()
    config = ModelConfig(
        epochs=args.epochs or defaults.epochs,
        max_chars=args.max_chars or defaults.max_chars,
    )
    print(
        f"training on {len(train_texts)} texts ({per_language}), validating on {len(val_texts)}",
        file=sys.stderr,
    )
    train_groups = [k for k, s in splits.items() for _ in s.train_texts]
    val_groups = [k for k, s in splits.items() for _ in s.val_texts]
    classifier, result = train(
        train_texts,
        train_labels,
        val_texts,
        val_labels,
        config,
        verbose=0 if args.quiet else 2,
        train_weights=balanced_weights(train_labels, train_groups),
        val_weights=balanced_weights(val_labels, val_groups),
    )
    version = args.version or int(time.time())
    metadata = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_s": round(result.train_s, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "splits": {k: s.sizes() for k, s in splits.items()},
        "max_train": args.max_train or None,
    }
    path = classifier.export(_model_dir(args), version, metadata)
    print(
        json.dumps(
            {
                "model_dir": str(path),
                "version": version,
                "train_s": round(result.train_s, 1),
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "val_accuracy": round(max(result.history.get("val_accuracy", [0.0])), 4),
            }
        )
    )
    return 0


def _concat(parts: list[Any]) -> Any:
    import numpy as np

    return np.concatenate(parts)


def _evaluate(args: argparse.Namespace) -> int:
    from recsys_tools.data.sentiment_corpora import load_splits
    from services.sentiment.backends import InProcessBackend
    from services.sentiment.evaluation import evaluate, goals, headline, update_card

    backend = InProcessBackend(_model_dir(args), args.version or 0)
    splits = load_splits(_data_dir(args))
    if args.languages:
        splits = {k: v for k, v in splits.items() if k in args.languages}
    model_info = {
        "version": backend.model_version,
        "path": backend.path.name,
        "load_s": round(backend.load_s, 2),
        **{k: backend.metadata.get(k) for k in ("train_s", "epochs_run", "best_epoch")},
    }

    def predict(texts: list[str]) -> Any:
        import numpy as np

        return np.concatenate(
            [backend.predict_proba(texts[i : i + 512]) for i in range(0, len(texts), 512)]
        )

    report = evaluate(predict, splits, baselines=not args.no_baselines, model_info=model_info)
    report["goals"] = goals(report)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if args.card:
        update_card(Path(args.card), report)
    for lang, results in report["languages"].items():
        for system, r in results.items():
            print(
                f"{lang} {system:9s} accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}",
                file=sys.stderr,
            )
    print(json.dumps(report["goals"]), file=sys.stderr)
    print(json.dumps(headline(report)))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from services.sentiment.__main__ import main

    return main([args.mode])


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sentiment", help="train, evaluate and run the sentiment classifier"
    )
    sub = parser.add_subparsers(dest="sentiment_command", metavar="SUBCOMMAND")
    sub.required = True
    model_help = f"model base directory (default: $SENTIMENT_MODEL_DIR or {DEFAULT_MODEL_DIR})"

    p = sub.add_parser("train", help="train on both corpora and export a SavedModel version")
    p.add_argument(
        "--data-dir", help="data cache (default: $RECSYS_DATA_DIR or ~/.cache/recsys/data)"
    )
    p.add_argument("--model-dir", help=model_help)
    p.add_argument("--version", type=int, default=0, help="version number (default: unix time)")
    p.add_argument("--epochs", type=int, default=0, help="maximum epochs (early stopping)")
    p.add_argument("--max-chars", type=int, default=0, help="characters seen by the CNN")
    p.add_argument(
        "--max-train", type=int, default=0, help="cap training texts per language (quick runs)"
    )
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "evaluate", help="score the model and TF-IDF baselines on the seeded test splits"
    )
    p.add_argument(
        "--data-dir", help="data cache (default: $RECSYS_DATA_DIR or ~/.cache/recsys/data)"
    )
    p.add_argument("--model-dir", help=model_help)
    p.add_argument("--version", type=int, default=0, help="model version (default: newest)")
    p.add_argument("--languages", nargs="+", choices=["zh", "en"], help="limit to these")
    p.add_argument("--no-baselines", action="store_true", help="score the model only")
    p.add_argument("--report", help="write the full report (JSON) here")
    p.add_argument("--card", help="update the generated block of this model card (Markdown)")
    p.set_defaults(func=_evaluate)

    for mode, text in (
        ("serve", "run the gRPC service (as recsys-sentiment serve)"),
        ("consume", "run the Kafka feedback consumer (as recsys-sentiment consume)"),
    ):
        p = sub.add_parser(mode, help=text)
        p.set_defaults(func=_serve, mode=mode)
