"""The demo's building blocks: the models its services load.

The services themselves run through :mod:`recsys_tools.harness` (``start_service``,
``wait_serving``), as the tests and the benchmarks run them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- models
@dataclass
class Timeline:
    """MovieLens-100K in time order, cut into the training part and the part to replay."""

    log: Any  # services.recommender.evaluation.EventLog
    train_idx: Any  # np.ndarray of event rows
    replay_idx: Any  # np.ndarray, time order


def load_timeline(train_frac: float) -> Timeline:
    import numpy as np

    from recsys_tools.data.movielens import load_ml100k
    from services.recommender.evaluation.data import event_log_from_movielens, time_split

    log = event_log_from_movielens(load_ml100k())
    train_idx, rest_idx = time_split(np.arange(len(log)), train_frac)
    order = np.argsort(log.timestamps[rest_idx], kind="stable")
    return Timeline(log, train_idx, rest_idx[order])


def train_recommender(timeline: Timeline, store: Path) -> tuple[str, float]:
    """ALS with ``recsys train``'s tuned defaults on the training part; (version, seconds)."""
    from services.recommender.training import ML100K_TUNED, TrainConfig, UserItemMatrix, train

    started = time.perf_counter()
    lg = timeline.log
    model = train(UserItemMatrix(lg.matrix(timeline.train_idx), lg.user_ids, lg.item_ids),
                  TrainConfig().with_params(**ML100K_TUNED), items=lg.item_meta)  # fmt: skip
    return model.save(store), time.perf_counter() - started


def has_sentiment_model(model_dir: Path) -> bool:
    """A TF-Serving layout with at least one exported version."""
    if (model_dir / "saved_model.pb").is_file():
        return True
    return model_dir.is_dir() and any(
        p.name.isdigit() and (p / "saved_model.pb").is_file() for p in model_dir.iterdir()
    )


def train_sentiment(model_dir: Path, *, max_train: int, epochs: int, log_path: Path) -> float:
    """A reduced sentiment model (``recsys sentiment train --max-train``) in a subprocess, so
    TensorFlow never loads into the demo process; returns seconds. ConfigError on failure."""
    started = time.perf_counter()
    argv = [sys.executable, "-m", "recsys_tools.cli", "sentiment", "train", "--quiet",
            "--model-dir", str(model_dir), "--max-train", str(max_train),
            "--epochs", str(epochs)]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log_path.open("wb") as out:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)  # fmt: skip
    if done.returncode != 0 or not has_sentiment_model(model_dir):
        tail = log_path.read_text(errors="replace")[-1500:]
        raise ConfigError(f"training the sentiment model failed (exit {done.returncode}); "
                          f"log {log_path}:\n{tail}")  # fmt: skip
    return time.perf_counter() - started
