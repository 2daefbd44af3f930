"""HTTP/JSON beside gRPC: the same messages (protobuf's JSON mapping), the same servicer code.

Why an ASGI app inside the service rather than gRPC-JSON transcoding in a proxy: a proxy is a
second process and a second hop per request (a JSON→protobuf conversion, a gRPC call over
loopback and back), a second thing to deploy, scale and watch; the app costs one JSON parse
per request on the loop the gRPC server already runs, and reaches the same validation by
calling the servicer's own conversion functions. The overhead against gRPC is measured by
``bench/http_load.py`` (docs/http.md, docs/benchmarks.md).

Each route is a :class:`UnaryRoute`: a protobuf request class, a response class and a
synchronous ``handler(request) -> response`` (the servicer's core call, which raises
:class:`~recsys.errors.RecsysError` for a bad or unanswerable request). This module turns a
body into the request message, a response into JSON, and every refusal into the AIP-193
error shape ``{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "..."}}``
with the HTTP status of the gRPC code (:data:`HTTP_STATUS`) — the code the same call would
get over gRPC, since both transports ask :mod:`recsys.grpc_requests` for it.

The OpenAPI document is generated from the message descriptors (:func:`openapi_document`),
so it cannot drift from the protos.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from recsys.grpc_requests import Refusal, error_refusal
from recsys.ports import bind_failed

log = logging.getLogger(__name__)

#: gRPC code → HTTP status, as google.rpc.Code documents it (AIP-193).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

OPENAPI_PATH = "/openapi.json"
#: gRPC's default largest request (4 MiB); a larger body is answered 413 unread.
MAX_BODY_BYTES = 4 * 1024 * 1024

#: (method, gRPC code name, seconds): how a service counts a finished HTTP call.
Observer = Callable[[str, str, float], None]
#: (method, request headers with lower-case names) -> None to go on, or the refusal
#: (UNAUTHENTICATED, PERMISSION_DENIED...): where a service plugs in the same bearer-token
#: check its gRPC interceptor makes, so that HTTP is never a way around it.
Authorizer = Callable[[str, dict[str, str]], "Refusal | None"]


def error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"error": {"code": HTTP_STATUS[code], "status": code.name, "message": message}}


def error_response(code: grpc.StatusCode, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=HTTP_STATUS[code])


@dataclass(frozen=True)
class UnaryRoute:
    """One RPC over HTTP: ``POST path`` with the request message as JSON."""

    path: str
    method: str  # the gRPC method name, as the metrics label it
    request_class: type[Message]
    response_class: type[Message]
    handler: Callable[[Any], Message]
    summary: str = ""


def parse_request(route: UnaryRoute, body: bytes) -> Message | Refusal:
    """The request message, or INVALID_ARGUMENT naming what did not parse.

    An empty body is the empty message, as an empty protobuf body is over gRPC. Unknown
    fields are refused (``ignore_unknown_fields=False``): a misspelt ``"userId"`` would
    otherwise be silently dropped and the call answered for the empty user.
    """
    message = route.request_class()
    if not body.strip():
        return message
    try:
        json_format.Parse(body, message)
    except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        return grpc.StatusCode.INVALID_ARGUMENT, f"request body is not a valid JSON "\
            f"{route.request_class.DESCRIPTOR.name}: {exc}"  # fmt: skip
    return message


def answer(route: UnaryRoute, body: bytes, observe: Observer | None = None) -> tuple[int, bytes]:
    """Parse, run the handler inline, encode: (HTTP status, JSON body); never raises."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        parsed = parse_request(route, body)
        if isinstance(parsed, tuple):
            code, message = parsed
            return _error(code, message)
        try:
            result = route.handler(parsed)
            payload = route_encoder(route)(result)
        except Exception as exc:
            code, message = error_refusal(route.method, exc, log)
            return _error(code, message)
        return 200, json.dumps(payload, separators=(",", ":")).encode()
    finally:
        if observe is not None:
            observe(route.method, code.name, time.perf_counter() - started)


def _error(code: grpc.StatusCode, message: str) -> tuple[int, bytes]:
    return HTTP_STATUS[code], json.dumps(error_body(code, message)).encode()


# ------------------------------------------------------------------------ JSON encoding
ToJson = Callable[[Any], Any]
#: A message, field or enum descriptor: protobuf's stubs type the upb and the pure-Python
#: descriptors apart, and a field's ``message_type`` as optional, though both are the same
#: object at run time and set for a message field.
AnyDescriptor = Any
_ENCODERS: dict[str, Callable[[Message], dict[str, Any]]] = {}


def route_encoder(route: UnaryRoute) -> Callable[[Message], dict[str, Any]]:
    return message_encoder(route.response_class.DESCRIPTOR)


def message_encoder(descriptor: AnyDescriptor) -> Callable[[Message], dict[str, Any]]:
    """``json_format.MessageToDict`` for one message type, with the per-field decisions made
    once instead of on every call.

    MessageToDict walks the descriptor for every field of every message it writes: for a
    Recommend answer of ten items that walk was most of the HTTP transport's CPU
    (docs/http.md, "JSON encoding"). The fields' converters are therefore built once per
    type from the descriptor, calling protobuf's own float formatting; a type with maps,
    well-known types or extensions, whose JSON has special forms, keeps MessageToDict.
    ``tests/unit/test_http_api.py`` checks the two agree on generated messages.
    """
    cached = _ENCODERS.get(descriptor.full_name)
    if cached is not None:
        return cached
    if not _plain(descriptor, set()):

        def generic(message: Message) -> dict[str, Any]:
            return json_format.MessageToDict(message)

        _ENCODERS[descriptor.full_name] = generic
        return generic
    converters: dict[str, tuple[str, ToJson, bool]] = {}

    def encode(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in message.ListFields():
            name, convert, repeated = converters[field.name]
            out[name] = [convert(v) for v in value] if repeated else convert(value)
        return out

    _ENCODERS[descriptor.full_name] = encode  # before the fields: a message may recurse
    for field in descriptor.fields:
        converters[field.name] = (field.json_name, _converter(field), field.is_repeated)
    return encode


def _plain(descriptor: AnyDescriptor, seen: set[str]) -> bool:
    """No field whose JSON form is special (maps, well-known types, extensions)."""
    if descriptor.full_name in seen:
        return True
    seen.add(descriptor.full_name)
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.is_extendable:
        return False
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                return False
            if not _plain(field.message_type, seen):
                return False
    return True


def _float(value: float) -> Any:
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return type_checkers.ToShortestFloat(value)


def _double(value: float) -> Any:
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return value


def _converter(field: AnyDescriptor) -> ToJson:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return message_encoder(field.message_type)
    if kind == FieldDescriptor.TYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda value: names.get(value, value)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return _float
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode("utf-8")
    if kind in _INT64:
        return str
    if kind == FieldDescriptor.TYPE_BOOL:
        return bool
    return lambda value: value  # strings, 32-bit integers


_INT64 = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64,
}  # fmt: skip


def json_app(
    routes: Sequence[UnaryRoute],
    *,
    title: str,
    version: str,
    ready: Callable[[], bool],
    observe: Observer | None = None,
    extra_routes: Sequence[Route] = (),
    authorize: Authorizer | None = None,
) -> ASGIApp:
    """The Starlette app: one POST route per RPC, ``/healthz`` (the process answers),
    ``/readyz`` (200 only while the service is SERVING, like gRPC health) and the OpenAPI
    document at :data:`OPENAPI_PATH`."""

    document = openapi_document(routes, title=title, version=version)

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if ready():
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

    async def wrong_method(request: Request) -> Response:
        return await not_allowed(request, Exception())

    # the RPC paths for any other method: 405 (POST never reaches Starlette)
    starlette_routes = [Route(r.path, wrong_method, methods=["GET", "PUT", "DELETE", "PATCH"])
                        for r in routes]  # fmt: skip
    starlette_routes += [
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *extra_routes,
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        del exc
        return error_response(grpc.StatusCode.NOT_FOUND, f"no route {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        del exc
        return JSONResponse(
            {"error": {"code": 405, "status": "UNIMPLEMENTED",
                       "message": f"{request.method} is not allowed on {request.url.path}"}},
            status_code=405,
        )  # fmt: skip

    fallback = Starlette(routes=starlette_routes,
                         exception_handlers={404: not_found, 405: not_allowed})  # fmt: skip
    by_path = {r.path: r for r in routes}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        """The RPC routes straight on ASGI; everything else through Starlette.

        Starlette's middleware stack, Request and Response cost about as much per call as
        the JSON work itself (docs/http.md, "JSON encoding"), and an RPC route needs none of
        them: an exact path, a body, a JSON answer.
        """
        route = by_path.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await fallback(scope, receive, send)
            return
        if authorize is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}  # fmt: skip
            refused = authorize(route.method, headers)
            if refused is not None:
                if observe is not None:
                    observe(route.method, refused[0].name, 0.0)
                status, payload = _error(*refused)
                await _respond(send, status, payload)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the caller went away: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                status, payload = _error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"request body larger than {MAX_BODY_BYTES} bytes",
                )
                status = 413
                break
            chunks.append(chunk)
            if not message.get("more_body", False):
                status, payload = answer(route, b"".join(chunks), observe)
                break
        await _respond(send, status, payload)

    return app


async def _respond(send: Any, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# ----------------------------------------------------------------------------- OpenAPI
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # the JSON mapping writes 64-bit integers as strings (and accepts numbers)
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}


def _field_schema(field: AnyDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        item: dict[str, Any] = {"$ref": _ref(field.message_type, schemas)}
    elif field.type == FieldDescriptor.TYPE_ENUM:
        item = {"$ref": _enum_ref(field.enum_type, schemas)}
    else:
        item = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": item}
    return item


def _enum_ref(enum: AnyDescriptor, schemas: dict[str, Any]) -> str:
    if enum.full_name not in schemas:
        schemas[enum.full_name] = {"type": "string", "enum": [v.name for v in enum.values]}
    return f"#/components/schemas/{enum.full_name}"


def _ref(message: AnyDescriptor, schemas: dict[str, Any]) -> str:
    name = message.full_name
    if name not in schemas:
        schemas[name] = {}  # placeholder first: a recursive message refers to itself
        properties = {f.json_name: _field_schema(f, schemas) for f in message.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties,
                                  "additionalProperties": False}  # fmt: skip
        oneofs = [o for o in message.oneofs if not o.name.startswith("_")]
        if oneofs:
            schema["description"] = "; ".join(
                f"at most one of {', '.join(f.json_name for f in o.fields)}" for o in oneofs
            )
        schemas[name] = schema
    return f"#/components/schemas/{name}"


def openapi_document(routes: Sequence[UnaryRoute], *, title: str, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 from the request and response descriptors (the protobuf JSON mapping:
    lowerCamelCase names, enums by name, 64-bit integers as strings)."""
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "integer"},
                        "status": {"type": "string"},
                        "message": {"type": "string"},
                    },
                }
            },
        }
    }
    paths: dict[str, Any] = {}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for route in routes:
        request_ref = _ref(route.request_class.DESCRIPTOR, schemas)
        response_ref = _ref(route.response_class.DESCRIPTOR, schemas)
        paths[route.path] = {
            "post": {
                "operationId": route.method,
                "summary": route.summary or route.method,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": request_ref}}},
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": {"$ref": response_ref}}},
                    },
                    "default": {"description": "an error (AIP-193)", **error},
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


# ---------------------------------------------------------------------- serving on a loop
def bind_socket(host: str, port: int, variable: str, *, reuse_port: bool) -> socket.socket:
    """A listening socket; ``reuse_port`` lets worker processes share the port (the kernel
    spreads connections over them, as for the gRPC port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise bind_failed(host, port, variable, exc) from None
    return sock


class HttpServer:
    """uvicorn on an event loop the caller already runs (the gRPC server's).

    One loop serves both transports: a request is run inline either way, so sharing the
    loop adds no thread hand-off and no GIL contention between two loops. uvicorn installs
    no signal handlers off the main thread; the service's own SIGTERM handling calls
    :meth:`stop`.
    """

    def __init__(self, app: ASGIApp, sock: socket.socket, loop: asyncio.AbstractEventLoop,
                 *, grace_s: float, tls: tuple[str, str, str] | None = None) -> None:  # fmt: skip
        """``tls``: (certificate chain, private key, client CA or "") files, as the gRPC
        port uses them; with a client CA, clients must present a certificate it signed."""
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.loop = loop
        ssl_options: dict[str, Any] = {}
        if tls is not None:
            cert, key, client_ca = tls
            ssl_options = {"ssl_certfile": cert, "ssl_keyfile": key}
            if client_ca:
                ssl_options.update(ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            app,
            **ssl_options,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=math.ceil(grace_s),
            backlog=1024,
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Start serving; returns once uvicorn has started (from any thread but the loop's)."""

        async def run() -> None:
            await self.server.serve(sockets=[self.sock])

        async def begin() -> None:
            self._task = asyncio.ensure_future(run())
            while not self.server.started and not self._task.done():
                await asyncio.sleep(0.01)
            if self._task.done():
                self._task.result()  # raise what stopped it

        asyncio.run_coroutine_threadsafe(begin(), self.loop).result()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the grace), close. Idempotent."""
        if self._task is None or self.loop.is_closed():
            return
        task = self._task
        self._task = None

        async def end() -> None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await task

        asyncio.run_coroutine_threadsafe(end(), self.loop).result()
        self.sock.close()
