"""Error types shared by the services.

Each error carries enough to be acted on: configuration errors name the setting
to change, and domain errors know the gRPC status code they map to, so the
transport layer never has to guess.
"""

from __future__ import annotations

import grpc


class RecsysError(Exception):
    """Base class: every error raised on purpose by this project."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class ConfigError(RecsysError):
    """Configuration is missing or invalid; the message says what to set."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class InfraError(RecsysError):
    """A local infrastructure process (Kafka, Redis) could not be started or reached."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class DataError(RecsysError):
    """A data set is missing, corrupt (checksum mismatch) or malformed."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidArgumentError(RecsysError):
    """The caller sent a request that can never succeed as sent."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(RecsysError):
    """The request names an entity (item, user, model) that does not exist."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class UnavailableError(RecsysError):
    """A dependency is down; the caller may retry."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
