"""Error types shared by the services.

Each error carries enough to be acted on: configuration errors name the setting
to change, and domain errors carry the name of the canonical status they map to
(``status``: "INVALID_ARGUMENT", "NOT_FOUND" ...), so the transport layer never has
to guess. The names are those of google.rpc.Code; this module imports no transport,
so the pure cores that raise these errors stay free of gRPC.
:func:`recsys.grpc_status.grpc_code` is the one place that turns a name into a
``grpc.StatusCode``.
"""

from __future__ import annotations

from typing import Literal

# The canonical status names this project raises (google.rpc.Code), by name so that a
# second transport (HTTP) can map the same names.
Status = Literal[
    "INTERNAL",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
]


class RecsysError(Exception):
    """Base class: every error raised on purpose by this project."""

    status: Status = "INTERNAL"


class ConfigError(RecsysError):
    """Configuration is missing or invalid; the message says what to set."""

    status: Status = "FAILED_PRECONDITION"


class PermissionDeniedError(ConfigError):
    """A dependency refused this process's credentials or a command they do not allow.

    A configuration error, not an outage: the grant (a Redis ACL, a Kafka ACL) or the
    credentials must change, so a retry loop re-raises it instead of backing off forever.
    """


class InfraError(RecsysError):
    """A local infrastructure process (Kafka, Redis) could not be started or reached."""

    status: Status = "UNAVAILABLE"


class DataError(RecsysError):
    """A data set is missing, corrupt (checksum mismatch) or malformed."""

    status: Status = "FAILED_PRECONDITION"


class InvalidArgumentError(RecsysError):
    """The caller sent a request that can never succeed as sent."""

    status: Status = "INVALID_ARGUMENT"


class NotFoundError(RecsysError):
    """The request names an entity (item, user, model) that does not exist."""

    status: Status = "NOT_FOUND"


class UnavailableError(RecsysError):
    """A dependency is down; the caller may retry."""

    status: Status = "UNAVAILABLE"
