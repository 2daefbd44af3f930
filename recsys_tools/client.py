"""A small gRPC client for frontends to copy: deadlines on every call, retries on UNAVAILABLE.

Retries use gRPC's own service-config retry policy (exponential backoff, only for
UNAVAILABLE, which is what a restarting or draining server returns), so no call
is retried after the server may have acted on it with another status.

The default targets are the services' default ports on this host (recommender 50051,
sentiment 50052: services/*/config.py), so ``recsys client`` reaches the services that
the README's commands start without a ``--target``.

    recsys client recommend --target 127.0.0.1:50051 --user u42 -k 10
    recsys client similar --item 50
    recsys client explain --user u42 --item 50
    recsys client classify --target 127.0.0.1:50052 --text "arrived broken"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

DEFAULT_RECOMMENDER = "127.0.0.1:50051"
DEFAULT_SENTIMENT = "127.0.0.1:50052"


#: gRPC caps a retry policy's ``maxAttempts`` at 5 (more is silently treated as 5).
MAX_ATTEMPTS = 5


def retry_service_config(max_attempts: int = 5) -> str:
    """gRPC service config retrying UNAVAILABLE with exponential backoff on every method.

    Only for ``max_attempts`` >= 2: gRPC rejects a retry policy of one attempt, and the
    channel then fails every call (:func:`make_channel` turns retries off instead).
    """
    if max_attempts < 2:
        raise ValueError(f"a retry policy needs max_attempts >= 2, not {max_attempts}")
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],  # every service and method on this channel
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def make_channel(target: str, *, max_attempts: int = 5, tls_ca: str | None = None) -> grpc.Channel:
    """A channel that tries each call up to ``max_attempts`` times on UNAVAILABLE.

    One attempt means no retries: retries are switched off rather than given a policy
    that gRPC would reject (it needs ``maxAttempts`` >= 2).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    options: list[tuple[str, Any]] = (
        [("grpc.enable_retries", 0)]
        if max_attempts == 1
        else [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(max_attempts)),
        ]
    )
    if tls_ca:
        with open(tls_ca, "rb") as handle:
            creds = grpc.ssl_channel_credentials(root_certificates=handle.read())
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The ``authorization`` metadata a server with ``AUTH_MODE=required`` reads
    (docs/recommender.md, "Authentication"); None without a token."""
    return (("authorization", f"Bearer {token}"),) if token else None


class RecommenderClient:
    """Typed wrapper over the recommender stub; every call has a deadline and, given a
    token, carries it as a bearer token."""

    def __init__(
        self, channel: grpc.Channel, timeout_s: float = 1.0, token: str | None = None
    ) -> None:
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        self.timeout_s = timeout_s
        self._metadata = auth_metadata(token)

    def recommend(
        self, user_id: str, k: int = 10, exclude: list[str] | None = None
    ) -> recommender_pb2.RecommendResponse:
        request = recommender_pb2.RecommendRequest(
            user_id=user_id, k=k, filters=recommender_pb2.Filters(exclude_item_ids=exclude or [])
        )
        return self._stub.Recommend(
            request, timeout=self.timeout_s, wait_for_ready=True, metadata=self._metadata
        )

    def similar(self, item_id: str, k: int = 10) -> recommender_pb2.SimilarItemsResponse:
        request = recommender_pb2.SimilarItemsRequest(item_id=item_id, k=k)
        return self._stub.SimilarItems(
            request, timeout=self.timeout_s, wait_for_ready=True, metadata=self._metadata
        )

    def explain(self, user_id: str, item_id: str, k: int = 5) -> recommender_pb2.ExplainResponse:
        request = recommender_pb2.ExplainRequest(user_id=user_id, item_id=item_id, k=k)
        return self._stub.Explain(
            request, timeout=self.timeout_s, wait_for_ready=True, metadata=self._metadata
        )


class SentimentClient:
    def __init__(
        self, channel: grpc.Channel, timeout_s: float = 2.0, token: str | None = None
    ) -> None:
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        self.timeout_s = timeout_s
        self._metadata = auth_metadata(token)

    def classify(self, text: str, language: str | None = None) -> sentiment_pb2.ClassifyResponse:
        request = sentiment_pb2.ClassifyRequest(text=text)
        if language:
            request.language = language
        return self._stub.Classify(
            request, timeout=self.timeout_s, wait_for_ready=True, metadata=self._metadata
        )


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=None, ensure_ascii=False))


def _run(args: argparse.Namespace) -> int:
    default = DEFAULT_SENTIMENT if args.action == "classify" else DEFAULT_RECOMMENDER
    target = args.target or default
    token = args.token or os.environ.get("RECSYS_TOKEN", "").strip() or None
    with make_channel(target, max_attempts=args.attempts, tls_ca=args.tls_ca) as channel:
        try:
            if args.action == "classify":
                sentiment = SentimentClient(channel, args.timeout, token)
                _print(sentiment.classify(args.text, args.language))
                return 0
            client = RecommenderClient(channel, args.timeout, token)
            if args.action == "recommend":
                _print(client.recommend(args.user, args.k, args.exclude))
            elif args.action == "similar":
                _print(client.similar(args.item, args.k))
            else:
                _print(client.explain(args.user, args.item, args.k))
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and not _connected(channel):
                # wait_for_ready turns "nothing listens there" into a deadline: say so
                details += f" (no server answered at {target}; is it running? --target)"
            print(f"error: {code.name if code else 'UNKNOWN'}: {details}", file=sys.stderr)
            return 1
    return 0


def _connected(channel: grpc.Channel) -> bool:
    """Whether ``channel`` has a connection now (without waiting for one)."""
    try:
        grpc.channel_ready_future(channel).result(timeout=0.05)
    except grpc.FutureTimeoutError:
        return False
    return True


def _attempts(value: str) -> int:
    """``--attempts``: 1 (no retries) to :data:`MAX_ATTEMPTS`, which is gRPC's own cap."""
    try:
        attempts = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= attempts <= MAX_ATTEMPTS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_ATTEMPTS} (gRPC's cap), not {value}")
    return attempts


def register(sub: Any) -> None:
    parser = sub.add_parser("client", help="call the recommender or sentiment service over gRPC")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def common(p: argparse.ArgumentParser, timeout: float) -> None:
        p.add_argument("--target", help="host:port (default: recommender 50051, sentiment 50052)")
        p.add_argument("--timeout", type=float, default=timeout, help="deadline per call, seconds")
        p.add_argument("--attempts", type=_attempts, default=MAX_ATTEMPTS,
                       help=f"tries on UNAVAILABLE, 1 (no retries) to {MAX_ATTEMPTS}")  # fmt: skip
        p.add_argument("--tls-ca", help="PEM file of the CA to trust (enables TLS)")
        p.add_argument("--token", help="bearer token for a server with AUTH_MODE=required "
                       "(default: $RECSYS_TOKEN, kept out of the process list)")  # fmt: skip
        p.set_defaults(func=_run)

    rec = actions.add_parser("recommend", help="top-k items for a user")
    rec.add_argument("--user", required=True)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--exclude", nargs="*", default=[])
    common(rec, 1.0)
    sim = actions.add_parser("similar", help="items similar to an item")
    sim.add_argument("--item", required=True)
    sim.add_argument("-k", type=int, default=10)
    common(sim, 1.0)
    exp = actions.add_parser("explain", help="which of the user's items drove a recommendation")
    exp.add_argument("--user", required=True)
    exp.add_argument("--item", required=True)
    exp.add_argument("-k", type=int, default=5)
    common(exp, 1.0)
    cls = actions.add_parser("classify", help="sentiment of a feedback text")
    cls.add_argument("--text", required=True)
    cls.add_argument("--language")
    common(cls, 2.0)
