"""Sentiment model latency and throughput, in process, on 2 cores.

Loads the newest SavedModel version from SENTIMENT_MODEL_DIR (or
``--model-dir``) with the service's own in-process backend, then over real
test-split texts (Chinese and English interleaved, so lengths are realistic):

* single-text latency: one ``predict_proba([text])`` call at a time (what one
  gRPC Classify costs the backend), p50/p99 over all calls after a warm-up;
* batched throughput: ``predict_proba`` over batches of ``--batch`` texts;
* the same single-text latency through the gRPC service on loopback
  (``grpc_p50_ms``/``grpc_p99_ms``: serialisation, thread pool and validation
  included);
* model size on disk and load time (``tf.saved_model.load`` + warm-up; the
  TensorFlow import is reported separately as ``tf_import_s``).

The process is pinned to 2 CPUs and TensorFlow to 2 intra-op and 2 inter-op
threads before the model loads.

    python -m bench.sentiment_latency [--quick] [--model-dir DIR] [--calls N] [--batch B]

Ends with one JSON line: p50_ms, p99_ms, batch_texts_per_s, model_mb, load_s (+ details).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CORES = 2


def pin_cores(n: int) -> list[int]:
    """Restrict this process to ``n`` CPUs (all of them when fewer exist)."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []
    chosen = available[:n]
    os.sched_setaffinity(0, chosen)
    return chosen


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def sample_texts(data_dir: Path | None, n: int) -> list[str]:
    from recsys_tools.data.sentiment_corpora import load_splits

    splits = load_splits(data_dir)
    zh, en = splits["zh"].test_texts, splits["en"].test_texts
    mixed = [t for pair in zip(zh, en, strict=False) for t in pair]
    reps = -(-n // len(mixed))
    return (mixed * reps)[:n]


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 3)


def grpc_latency(backend: Any, texts: list[str]) -> dict[str, float]:
    import grpc

    from recsys.health import HealthState
    from recsys.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
    from services.sentiment.config import SentimentSettings
    from services.sentiment.server import SERVICE_NAME, create_server

    settings = SentimentSettings(grpc_workers=4)
    server, port = create_server(
        backend, settings, HealthState([SERVICE_NAME]), port=0, host="127.0.0.1"
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
    try:
        for t in texts[:20]:
            stub.Classify(sentiment_pb2.ClassifyRequest(text=t[:5000]))
        times = []
        for t in texts:
            t0 = time.perf_counter()
            stub.Classify(sentiment_pb2.ClassifyRequest(text=t[:5000]))
            times.append(time.perf_counter() - t0)
    finally:
        channel.close()
        server.stop(grace=None)
    return {"grpc_p50_ms": percentile_ms(times, 50), "grpc_p99_ms": percentile_ms(times, 99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (about a minute)")
    parser.add_argument("--model-dir", help="SavedModel base dir (default: SENTIMENT_MODEL_DIR)")
    parser.add_argument("--data-dir", help="data cache holding the test splits")
    parser.add_argument("--calls", type=int, default=0, help="single-text calls (default 2000)")
    parser.add_argument("--batch", type=int, default=256, help="texts per batched call")
    parser.add_argument("--batch-texts", type=int, default=0, help="texts for the throughput run")
    args = parser.parse_args(argv)
    calls = args.calls or (500 if args.quick else 2000)
    batch_texts = args.batch_texts or (5_000 if args.quick else 20_000)

    cpus = pin_cores(CORES)
    t0 = time.perf_counter()
    from services.sentiment.model import limit_threads  # imports TensorFlow

    limit_threads(CORES)
    tf_import_s = time.perf_counter() - t0

    from services.sentiment.backends import InProcessBackend
    from services.sentiment.config import default_model_dir

    model_dir = Path(args.model_dir).expanduser() if args.model_dir else default_model_dir()
    backend = InProcessBackend(model_dir)
    texts = sample_texts(Path(args.data_dir) if args.data_dir else None, max(calls, batch_texts))
    print(
        f"model {backend.path} (version {backend.model_version}), {len(texts)} texts, cpus {cpus}",
        file=sys.stderr,
    )

    for t in texts[:50]:  # warm-up: graph caches, allocator
        backend.predict_proba([t])
    single = []
    for t in texts[:calls]:
        t1 = time.perf_counter()
        backend.predict_proba([t])
        single.append(time.perf_counter() - t1)

    backend.predict_proba(texts[: args.batch])
    t2 = time.perf_counter()
    done = 0
    for i in range(0, batch_texts, args.batch):
        chunk = texts[i : i + args.batch]
        backend.predict_proba(chunk)
        done += len(chunk)
    batch_s = time.perf_counter() - t2

    grpc_figures = grpc_latency(backend, texts[: max(200, calls // 2)])
    result = {
        "p50_ms": percentile_ms(single, 50),
        "p99_ms": percentile_ms(single, 99),
        "batch_texts_per_s": round(done / batch_s, 1),
        "model_mb": round(dir_mb(backend.path), 2),
        "load_s": round(backend.load_s, 3),
        "tf_import_s": round(tf_import_s, 2),
        **grpc_figures,
        "calls": calls,
        "batch": args.batch,
        "batch_texts": done,
        "cores": len(cpus) or None,
        "model_version": backend.model_version,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
