"""The gRPC side of :mod:`recsys.auth`: read a call's credentials, ask the policy.

Both servers' call wrappers ask :func:`auth_refusal` first, so a refused call is answered,
counted and timed like every other answer (the request counter by code, plus the auth
counter by reason) and the servicer's work never runs. It lives in the wrapper, not in a
``grpc`` server interceptor, because only the call's context has the verified client
certificate of a mutual-TLS connection (an interceptor sees the method and metadata only),
and the wrapper already counts and answers every refusal in one place. Health and
reflection are separate services with no such wrapper: they stay open, as
Kubernetes' native gRPC probes need.

A denial is logged at most once per 10 s per method and reason (a client with a revoked
token usually retries in a loop), with the method, the reason and, once known, the client's
name; never the token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc

from recsys.auth import Denial, Policy
from recsys.grpc_requests import LogThrottle

log = logging.getLogger(__name__)
_denied_log = LogThrottle(log, interval_s=10.0)

_TLS_NAME_KEYS = ("x509_common_name", "x509_subject_alternative_name")


def authorization(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The ``authorization`` metadata value, or None (gRPC lower-cases metadata keys)."""
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None


def tls_names(context: Any) -> list[str]:
    """The verified client certificate's common name and subject alternative names."""
    auth_context = context.auth_context() or {}
    return [
        raw.decode("utf-8", "replace")
        for key in _TLS_NAME_KEYS
        for raw in auth_context.get(key, ())
    ]


def auth_refusal(
    policy: Policy, method: str, full_method: str, context: Any, denied: Any
) -> tuple[grpc.StatusCode, str] | None:
    """(code, message) when ``policy`` refuses the call ``full_method``
    (``package.Service/Method``) on ``context``, counted in the server's auth counter
    ``denied`` (labels: ``method``, the reason); None to go ahead.

    The certificate's names are read only when the policy knows any and no token came:
    the common case (a token) costs one metadata scan, one SHA-256 and a comparison per
    client.
    """
    token = authorization(context.invocation_metadata())
    names = tls_names(context) if token is None and policy.uses_tls_names else ()
    denial: Denial | None = policy.decide(full_method, token, names)
    if denial is None:
        return None
    denied.labels(method, denial.reason).inc()
    extra = {"method": full_method, "reason": denial.reason, "client": denial.client}
    _denied_log.warning(f"{full_method}:{denial.reason}", "call refused", extra)
    return grpc.StatusCode[denial.status], denial.message
