"""``recsys serve``: run the recommender gRPC server from the CLI (same as ``recsys-recommender``).

Flags override the matching environment variables for this run; everything else is read
from the environment as documented in docs/recommender.md.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

FLAGS = {
    "port": "GRPC_PORT",
    "host": "GRPC_HOST",
    "workers": "WORKERS",
    "model_dir": "RECSYS_MODEL_DIR",
    "redis_url": "REDIS_URL",
    "metrics_port": "METRICS_PORT",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the recommender gRPC server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, help="gRPC port (GRPC_PORT, default 50051)")
    parser.add_argument("--host", help="bind address (GRPC_HOST, default 0.0.0.0)")
    parser.add_argument("--workers", type=int, help="server processes (WORKERS, default: CPUs)")
    parser.add_argument("--model-dir", help="model store (RECSYS_MODEL_DIR)")
    parser.add_argument("--redis-url", help="feature store (REDIS_URL)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (METRICS_PORT)")
    parser.add_argument("--noop", action="store_true",
                        help="Recommend answers empty lists (benchmark baseline)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for attr, name in FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[name] = str(value)
    if args.noop:
        os.environ["RECOMMENDER_NOOP"] = "1"
    from services.recommender.__main__ import main

    return main()
