"""Request bodies that do not parse reach the servicer as a value, not as grpc's exception.

grpc's generated ``add_*Servicer_to_server`` registers each request type's ``FromString``
as the method's deserializer, and grpc calls it before the servicer runs. A body with
invalid UTF-8 in a string field, or bytes that are not that message at all, then fails
inside grpc: answered ``UNKNOWN`` with the Python exception's class in the message
(``grpc.aio``) or ``INTERNAL`` (the threaded server), one ERROR traceback in the log per
call, and never seen by the servicer, so never counted in its request metrics.

:func:`add_servicer` registers the same methods with a deserializer that never raises: a
body that does not parse becomes a :class:`MalformedRequest`, which the servicer's one
call wrapper answers ``INVALID_ARGUMENT`` with :attr:`MalformedRequest.message`, counts
like any other answer, and logs through a :class:`LogThrottle` (a client sending garbage
in a loop must not turn the log into a copy of its traffic).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from recsys.errors import RecsysError
from recsys.grpc_status import grpc_code


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """What the servicer receives instead of a request whose body does not parse."""

    type_name: str  # the full protobuf name of the expected request message
    reason: str  # the parser's own words: "String field had bad UTF-8", ...

    @property
    def message(self) -> str:
        """The status message: which message the body should have been, and what is wrong."""
        return f"request body is not a valid {self.type_name}: {self.reason}"


def tolerant_parser(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    """``message_class.FromString`` that returns a :class:`MalformedRequest` instead of raising.

    Any exception counts, not only ``DecodeError``: whatever the parser objects to is a
    property of the bytes the caller sent, and an exception here would reach grpc again.
    """
    full_name = message_class.DESCRIPTOR.full_name
    prefix = f"Error parsing message with type '{full_name}': "

    def parse(data: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(data)
        except Exception as exc:
            reason = str(exc).removeprefix(prefix) or type(exc).__name__
            return MalformedRequest(full_name, reason)

    return parse


_HANDLERS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_servicer(
    server: grpc.Server | grpc.aio.Server, servicer: object, service: ServiceDescriptor
) -> None:
    """Register ``servicer``'s methods for ``service`` as the generated code does, with
    :func:`tolerant_parser` deserializers.

    The servicer's methods must accept a :class:`MalformedRequest` wherever a request
    message would come. Registered both as a generic handler and as registered methods,
    as the generated ``add_*Servicer_to_server`` does (grpc's fast path for known methods).
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        factory = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=tolerant_parser(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    generic = grpc.method_handlers_generic_handler(service.full_name, handlers)
    server.add_generic_rpc_handlers((generic,))
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[union-attr]


class LogThrottle:
    """At most one WARNING per ``interval_s`` per key; the next one says how many were not
    logged since (``suppressed``), so a flood costs a line per interval, not one per call."""

    def __init__(
        self,
        log: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()  # the threaded server logs from several threads
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, extra: dict[str, Any] | None = None) -> bool:
        """Log ``message`` now unless ``key`` was logged less than ``interval_s`` ago;
        True when it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self.log.warning(message, extra={**(extra or {}), "suppressed": suppressed})
        return True


#: What a call answers instead of its result: a status code and the caller's message.
Refusal = tuple[grpc.StatusCode, str]


def refusal(
    method: str, request: object, malformed_log: LogThrottle, *, expired: bool = False
) -> Refusal | None:
    """Why a call is answered without doing its work, or None to do it.

    A body that did not parse is INVALID_ARGUMENT (logged through ``malformed_log``); a
    request whose deadline passed while it queued is DEADLINE_EXCEEDED, the caller having
    given up. Both servers' call wrappers ask this, so the two answer alike.
    """
    if isinstance(request, MalformedRequest):
        extra = {"method": method, "error": request.reason}
        malformed_log.warning(method, "request body does not parse", extra)
        return grpc.StatusCode.INVALID_ARGUMENT, request.message
    if expired:
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before the request was handled"
    return None


def error_refusal(method: str, exc: Exception, log: logging.Logger) -> Refusal:
    """The answer to an error a call's work raised: a RecsysError's own status and message;
    anything else is a bug, INTERNAL without details and logged with its traceback (left to
    grpc it would be UNKNOWN with the exception's text, and uncounted)."""
    if isinstance(exc, RecsysError):
        return grpc_code(exc), str(exc)
    log.error("unexpected error", exc_info=exc, extra={"method": method})
    return grpc.StatusCode.INTERNAL, "internal error; the server log has the details"
