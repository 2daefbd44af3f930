"""Kafka topic names, record encodings and dead-letter headers: pure, no Kafka client.

Records carry either protobuf binary or the canonical proto3 JSON mapping of the
same message; the ``content-type`` header tells them apart (absent header means
protobuf, the compact default). Decoding never raises anything but
:class:`DecodeError`, whose ``reason`` goes into the dead-letter header.

This module imports no Kafka client so that the services' pure cores, which decode
and validate records, stay testable without one (an import contract checks it);
the clients are in :mod:`recsys.kafka_io`, the consume loop in :mod:`recsys.consume`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

CONTENT_TYPE_HEADER = "content-type"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
REASON_HEADER = "x-dead-letter-reason"

# Topic names (overridable per service through its own env settings).
TOPIC_CLICKS = "recsys.clicks.v1"
TOPIC_CLICKS_DLQ = "recsys.clicks.dlq.v1"
TOPIC_FEEDBACK = "recsys.feedback.v1"
TOPIC_FEEDBACK_SCORED = "recsys.feedback.scored.v1"
TOPIC_FEEDBACK_DLQ = "recsys.feedback.dlq.v1"

M = TypeVar("M", bound=Message)
Headers = Sequence[tuple[str, bytes]]


class DecodeError(ValueError):
    """A record's bytes could not be turned into the expected message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(message: Message, content_type: str = CONTENT_TYPE_PROTOBUF) -> tuple[bytes, Headers]:
    """Serialise ``message``; return the value bytes and the headers to send with them."""
    if content_type == CONTENT_TYPE_PROTOBUF:
        value = message.SerializeToString()
    elif content_type == CONTENT_TYPE_JSON:
        value = json_format.MessageToJson(message, indent=None).encode("utf-8")
    else:
        raise ValueError(f"unsupported content type {content_type!r}")
    return value, [(CONTENT_TYPE_HEADER, content_type.encode("ascii"))]


def header_value(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key.lower() == name and value is not None:
            try:
                return value.decode("ascii").strip().lower()
            except UnicodeDecodeError:
                return None
    return None


def decode(
    value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None, cls: type[M]
) -> M:
    """Parse a record value into ``cls`` according to its content-type header."""
    if value is None:
        raise DecodeError("empty record value (tombstone)")
    content_type = header_value(headers, CONTENT_TYPE_HEADER) or CONTENT_TYPE_PROTOBUF
    content_type = content_type.split(";")[0].strip()
    message = cls()
    if content_type == CONTENT_TYPE_PROTOBUF:
        try:
            message.ParseFromString(value)
        except (ProtoDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(f"invalid protobuf: {exc}") from None
    elif content_type == CONTENT_TYPE_JSON:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 in JSON record at byte {exc.start}") from None
        try:
            json_format.Parse(text, message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON for {cls.DESCRIPTOR.full_name}: {exc}") from None
    else:
        raise DecodeError(f"unsupported content-type {content_type!r}")
    return message


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record went to the dead-letter topic: a metric label and a human detail."""

    code: str
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


class RawRecord(Protocol):
    """The fields of a kafka-python ConsumerRecord the services' pure cores read."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


def dead_letter_headers(record: RawRecord, rejection: Rejection) -> list[tuple[str, bytes]]:
    """The original headers plus the reason and where the record came from."""
    headers = [(k, v) for k, v in (record.headers or ()) if v is not None and k != REASON_HEADER]
    headers += [
        (REASON_HEADER, rejection.reason.encode("utf-8")),
        ("x-dead-letter-code", rejection.code.encode("ascii")),
        ("x-original-topic", record.topic.encode("utf-8")),
        ("x-original-partition", str(record.partition).encode("ascii")),
        ("x-original-offset", str(record.offset).encode("ascii")),
    ]
    return headers
