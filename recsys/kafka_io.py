"""Kafka topic names, message encodings and client factories.

Records carry either protobuf binary or the canonical proto3 JSON mapping of the
same message; the ``content-type`` header tells them apart (absent header means
protobuf, the compact default). Decoding never raises anything but
:class:`DecodeError`, whose ``reason`` goes into the dead-letter header.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from recsys.errors import ConfigError
from recsys.settings import parse_bootstrap

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
_log = logging.getLogger("recsys.kafka_io")
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


def check_reachable(bootstrap: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a one-line message when no bootstrap server accepts a TCP connection."""
    servers = parse_bootstrap(bootstrap)
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError:
            continue
    raise ConfigError(
        f"cannot reach Kafka at {bootstrap}; set KAFKA_BOOTSTRAP_SERVERS to a reachable "
        "broker or start one with `recsys infra up`"
    )


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A producer tuned for durability: acks=all, retries, ordered per partition."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "acks": "all",
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
        "client_id": "recsys-producer",
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(bootstrap: str, group_id: str | None, *topics: str, **overrides: Any) -> Any:
    """A consumer that never auto-commits: callers commit after their side effects."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "recsys-consumer",
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def ensure_topics(
    bootstrap: str, topics: dict[str, int], replication: int = 1, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet (name -> partitions); idempotent.

    Returns only once every topic's partitions have leaders in the cluster
    metadata: a consumer that subscribes right after creation otherwise can join
    its group with no partitions assigned and wait a whole rebalance.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=parse_bootstrap(bootstrap), client_id="recsys-admin")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, num_partitions=parts, replication_factor=replication)
            for name, parts in topics.items()
            if name not in existing
        ]
        if new:
            # Another process may have created them in between: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        deadline = time.monotonic() + timeout_s
        pending = set(topics)
        while pending:
            for info in admin.describe_topics(sorted(pending)):
                partitions = info.get("partitions") or []
                if (
                    info.get("error_code") == 0
                    and partitions
                    and all(
                        p.get("error_code") == 0 and p.get("leader_id", -1) >= 0 for p in partitions
                    )
                ):
                    pending.discard(info["name"])
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready after {timeout_s:.0f}s: {sorted(pending)}")
            time.sleep(0.1)
    finally:
        admin.close()


def wait_for_partitions(
    consumer: Any,
    topic: str,
    timeout_s: float | None = None,
    stop: Any = None,
    poll_s: float = 0.2,
) -> bool:
    """Block until ``consumer``'s own metadata shows leaders for every partition of ``topic``.

    It must be the consumer that is about to subscribe: a group leader whose
    metadata lacks the topic at join time logs "No partition metadata for
    topic" and assigns nothing until its next metadata refresh, even when the
    cluster (as :func:`ensure_topics` checks it) already has the leaders.
    Returns False when ``stop`` (a ``threading.Event``) is set or ``timeout_s``
    passes first.
    """
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while stop is None or not stop.is_set():
        try:
            partitions = consumer.partitions_for_topic(topic)
        except KafkaError:
            partitions = None
        if partitions:
            cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
            leaders = (
                [cluster.leader_for_partition(TopicPartition(topic, p)) for p in partitions]
                if cluster is not None
                else []
            )
            if all(leader is not None and leader >= 0 for leader in leaders):
                return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if stop is not None:
            stop.wait(poll_s)
        else:
            time.sleep(poll_s)
    return False


def group_joined(consumer: Any) -> bool:
    """True when ``consumer`` knows its coordinator and has no rejoin pending.

    A member that is joined but owns nothing (more members than partitions) is
    healthy; one stuck half-way through a join is not. Reads kafka-python's
    coordinator defensively: anything unexpected counts as joined, so a probe
    never triggers a restart on its own.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:
        return True
    try:
        if coordinator.coordinator_unknown():
            return False
        return not coordinator.need_rejoin()
    except Exception:
        return True


class ProgressWatchdog:
    """Decides when a consumer looks stuck and should be closed and rebuilt.

    Two stalls seen with kafka-python 3.0: a group (re)join that never
    completes, and a member that owns partitions with lag but receives
    nothing. Both heal when the client is recreated; uncommitted work is
    replayed, which the callers tolerate. ``check`` is pure: the caller feeds
    it what it observed and acts on the reason it returns.
    """

    def __init__(self, stall_s: float, now: float) -> None:
        self.stall_s = stall_s
        self.reset(now)

    def reset(self, now: float) -> None:
        self._last_ok = now

    def progressed(self, now: float) -> None:
        self._last_ok = now

    def due(self, now: float) -> bool:
        """True once ``stall_s`` passed without progress: time to probe (possibly costly)."""
        return self.stall_s > 0 and now - self._last_ok >= self.stall_s

    def check(self, now: float, *, joined: bool, lagging: bool | None) -> str | None:
        """The stall reason when stuck for ``stall_s``, else None.

        ``joined``: membership complete; ``lagging``: assigned partitions have
        unread records (None: not assigned / not asked). A healthy state resets
        the clock; a stuck one only counts time.
        """
        if self.stall_s <= 0:
            return None
        if joined and not lagging:
            self._last_ok = now
            return None
        if now - self._last_ok < self.stall_s:
            return None
        return "join" if not joined else "no_progress"


def assigned_lag(consumer: Any, timeout_ms: int = 2000) -> bool:
    """True when some assigned, unpaused partition has records past the consumer's position.

    Makes one ListOffsets request (and a position lookup per partition), so
    only call it when a stall is suspected. A position that cannot be learnt
    while end offsets can counts as lag: the client is not making progress.
    """
    from kafka.errors import KafkaError

    paused = set(consumer.paused())
    assignment = [tp for tp in consumer.assignment() if tp not in paused]
    if not assignment:
        return False
    try:
        ends = consumer.end_offsets(assignment, timeout_ms=timeout_ms)
    except KafkaError:
        return False  # the broker is unreachable: a dependency outage, not a stall
    for tp in assignment:
        end = ends.get(tp)
        if not end:
            continue
        try:
            position = consumer.position(tp, timeout_ms=timeout_ms)
        except KafkaError:
            return True
        if position is None or position < end:
            return True
    return False


def probe_stall(consumer: Any, watchdog: ProgressWatchdog) -> str | None:
    """The watchdog's stall reason for ``consumer`` (None: not stuck).

    Asks the consumer whether it joined its group and, if so, whether its partitions have
    unread records: broker round trips, so call it only once ``watchdog.due``.
    """
    joined = group_joined(consumer)
    lagging = assigned_lag(consumer) if joined else None
    return watchdog.check(time.monotonic(), joined=joined, lagging=lagging)


# --- consumer-group mechanics shared by the services' consume loops ---------------------
# The events and sentiment consumers differ in what they do with a batch; how they stay in
# their group while backing off, commit, and dead-letter is the same and lives here.


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


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """Exponential back-off, doubling up to ``max_s``, forever."""
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * 2.0, max_s)


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


class RebalanceOwner(Protocol):
    def on_revoked(self, revoked: list[Any]) -> None: ...
    def on_assigned(self, assigned: list[Any]) -> None: ...


def rebalance_listener(owner: RebalanceOwner) -> Any:
    """A kafka-python rebalance listener forwarding to ``owner`` (which must not block)."""
    from kafka import ConsumerRebalanceListener

    class _Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
            owner.on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
            owner.on_assigned(list(assigned))

    return _Listener()


def commit_on_revoke(consumer: Any, pending: dict[Any, int], revoked: Iterable[Any]) -> None:
    """Commit what was handled from partitions being lost, without waiting; forget them.

    kafka-python 3 runs listeners on its IO thread, where a blocking ``commit()``
    raises ("Cannot block on net.run() from the IO thread") and fails the whole
    rejoin; so the commit is sent without waiting. If it is lost, the next owner
    replays, which the services' idempotent writes turn into a no-op.
    """
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    revoked = list(revoked)
    offsets = {tp: pending[tp] for tp in revoked if tp in pending}
    if offsets:
        try:
            consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except (KafkaError, RuntimeError) as exc:
            _log.warning("commit on revoke failed", extra={"error": str(exc)})
    for tp in revoked:
        pending.pop(tp, None)


def pause_assignment(consumer: Any) -> None:
    assignment = list(consumer.assignment())
    if assignment:
        consumer.pause(*assignment)


def resume_assignment(consumer: Any) -> None:
    assignment = list(consumer.assignment())
    if assignment:
        consumer.resume(*assignment)


def poll_while_paused(consumer: Any, delay_s: float, stop: Any) -> bool:
    """Keep polling (so the group keeps us) for ``delay_s``; False when ``stop`` is set.

    The partitions are paused, but a poll may still return records fetched
    earlier: seek back over them so nothing is skipped.
    """
    from kafka.errors import KafkaError

    deadline = time.monotonic() + delay_s
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        try:
            polled = consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000))
        except KafkaError:
            stop.wait(min(remaining, 0.5))
            continue
        for tp, batch in polled.items():
            if batch:
                consumer.seek(tp, batch[0].offset)
    return False


def commit_pending(consumer: Any, pending: dict[Any, int]) -> bool:
    """Commit ``pending`` offsets of still-assigned partitions and clear them.

    Returns False when the group rebalanced (or is rebalancing: a retry cannot
    succeed until poll() rejoins): the new owner replays from the last committed
    offset. Any other KafkaError propagates, for the caller to back off and retry.
    """
    from kafka.errors import CommitFailedError, RebalanceInProgressError
    from kafka.structs import OffsetAndMetadata

    assignment = consumer.assignment()
    offsets = {
        tp: OffsetAndMetadata(offset, "", -1) for tp, offset in pending.items() if tp in assignment
    }
    try:
        if offsets:
            consumer.commit(offsets)
    except (CommitFailedError, RebalanceInProgressError) as exc:
        _log.warning("commit rejected after rebalance", extra={"error": str(exc)})
        pending.clear()
        return False
    pending.clear()
    return True


class PausedBackoff:
    """A consume loop's back-off on a failing dependency, with its partitions paused.

    While it lasts the loop keeps polling (so the group keeps the member) with every
    assigned partition paused, including partitions assigned meanwhile. Whatever ends it
    (the dependency answering, or the coordinator saying the group rebalanced) must
    :meth:`resume`: a member left paused never fetches its new partitions again.
    """

    def __init__(self) -> None:
        self.active = False

    def wait(self, consumer: Any, delay_s: float, stop: Any) -> bool:
        """Back off for ``delay_s`` while staying in the group; False when asked to stop."""
        if not self.active:
            self.active = True
            pause_assignment(consumer)
        return poll_while_paused(consumer, delay_s, stop)

    def resume(self, consumer: Any) -> None:
        if self.active:
            self.active = False
            resume_assignment(consumer)

    def on_assigned(self, consumer: Any, assigned: Sequence[Any]) -> None:
        """From the rebalance listener: partitions given during a back-off wait too."""
        if self.active and assigned:
            consumer.pause(*assigned)


def commit_until_done(
    consumer: Any,
    pending: dict[Any, int],
    backoff: PausedBackoff,
    stop: Any,
    delays: Iterator[float],
    on_error: Callable[[BaseException], None],
    on_ok: Callable[[], None],
) -> bool:
    """Commit ``pending``, backing off on Kafka errors until it is done (True).

    False when the group rebalanced (the new owner replays from the last commit) or when
    ``stop`` is set during a back-off. Both of the coordinator's answers end the back-off.
    """
    from kafka.errors import KafkaError

    while pending:
        try:
            committed = commit_pending(consumer, pending)
        except KafkaError as exc:
            on_error(exc)
            if not backoff.wait(consumer, next(delays), stop):
                return False
            continue
        if committed:
            on_ok()
        backoff.resume(consumer)
        if not committed:
            return False
    return True


def recreate_consumer(
    consumer: Any,
    factory: Callable[[], Any],
    stop: Any,
    delays: Iterator[float],
    on_error: Callable[[BaseException], None],
) -> Any | None:
    """Close a stuck consumer without committing and build a fresh one with ``factory``.

    Uncommitted work is replayed by the new member (the services' writes are
    idempotent). While the factory fails (Kafka down), ``on_error`` is told and we
    back off; returns None when ``stop`` is set first.
    """
    from kafka.errors import KafkaError

    try:
        consumer.close(autocommit=False)
    except Exception as exc:  # a broken client may fail to close; it is dropped anyway
        _log.warning("closing the stalled consumer failed", extra={"error": str(exc)})
    while not stop.is_set():
        try:
            return factory()
        except KafkaError as exc:
            on_error(exc)
            _log.warning("recreating the consumer failed", extra={"error": str(exc)})
            stop.wait(next(delays))
    return None
