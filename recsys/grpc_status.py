"""The one mapping from this project's error statuses to gRPC status codes.

:mod:`recsys.errors` names statuses as strings so that pure code never imports gRPC;
every gRPC transport (the recommender and sentiment servers) asks this module for
the code, so the two can never disagree.
"""

from __future__ import annotations

import grpc

from recsys.errors import RecsysError, Status

_CODES: dict[Status, grpc.StatusCode] = {
    "INTERNAL": grpc.StatusCode.INTERNAL,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
}


def grpc_code(error: RecsysError) -> grpc.StatusCode:
    """The gRPC status code for ``error`` (INTERNAL for a status this map lacks)."""
    return _CODES.get(error.status, grpc.StatusCode.INTERNAL)


#: Every code the servers' call wrappers answer with: OK, each mapped code (INVALID_ARGUMENT
#: also for a body that does not parse), DEADLINE_EXCEEDED for a request that expired
#: while queued, and the two refusals of ``recsys.grpc_auth``. The request counters are
#: created with each of them at start, so that a series exists at zero before its first
#: call (``rate()`` and ``absent()`` need one).
ANSWERED_CODES: tuple[grpc.StatusCode, ...] = (
    grpc.StatusCode.OK,
    *dict.fromkeys(_CODES.values()),
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)
