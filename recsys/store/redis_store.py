"""FeatureStore on Redis: a batch of events is one round trip of server-side scripts.

Standalone Redis (the default): the batch's users are cut into chunks of at most
``max_events_per_script`` events, and each chunk is ONE ``EVALSHA`` of the batch
script covering all its users' keys plus the global ``{g}`` keys; the chunks are
pipelined, so a batch of 2,000 events is a handful of script calls and one
round trip. Chunking bounds how long one script blocks other clients (readers).

Redis Cluster (``cluster=True``): a script may only touch keys of one slot, so
users are grouped by the slot of their ``{u:<id>}`` hash tag (one call per slot
group, per-user part only) and the global part is a call of its own.

Every call checks an ``applied`` ZSET of event ids before changing anything (in
standalone the user's, for both parts, since one atomic call does both; in the
cluster layout the global call keeps one of its own), so re-running a batch, or the
part of it that a crash interrupted, changes nothing that was already applied.
The events travel as plain script arguments (nothing for the script to decode), and
the per-user maintenance (pruning the dedup memory, the TTL refresh) is amortised:
the store tells the script when it is due (docs/redis-schema.md, "Writes").
:meth:`RedisFeatureStore.begin_apply` sends a batch without waiting, so the caller
can poll Kafka while Redis works.

The scripts are the package's ``lua/*.lua`` files. Every public method turns the
client library's errors into :class:`~recsys.store.base.StoreUnavailableError`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import redis.exceptions
from hiredis import pack_command
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from recsys.store.base import StorePermissionError, StoreUnavailableError
from recsys.store.decay import decay_rate, decayed_score
from recsys.store.keys import KeySchema
from recsys.store.model import (
    ApplyResult,
    DoneApply,
    FeatureEvent,
    Interaction,
    PendingApply,
    Sentiment,
    StoreConfig,
    UserState,
    _float_json,
    _quote,
)

SCRIPTS = ("batch", "suppress", "sentiment")


@functools.cache
def script_sources() -> dict[str, str]:
    """Name -> Lua source of every script, read once from the package's ``lua/`` files."""
    lua = resources.files("recsys.store.lua")
    return {name: lua.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in SCRIPTS}


# What redis-py raises when the server is down, slow, or refuses a command (cluster
# clients raise RedisClusterException, which is not a RedisError, when no node answers).
_CLIENT_ERRORS = (RedisError, RedisClusterException, OSError)

_P = ParamSpec("_P")
_R = TypeVar("_R")


# A command inside a script that the caller's ACL denies fails with a plain ``ERR`` reply
# (Redis 7.0), not NOPERM; this is how its text starts.
_SCRIPT_DENIED = "The user executing the script can't"


def _denied(exc: BaseException) -> bool:
    """True when Redis refused the login or the ACL user's command or keys."""
    if isinstance(exc, (AuthenticationError, NoPermissionError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(("NOPERM", _SCRIPT_DENIED))


def _store_error(
    exc: BaseException, user: str = "default"
) -> StoreUnavailableError | StorePermissionError:
    """The store's error for a client error: denied (no retry helps) or unavailable."""
    if _denied(exc):
        return StorePermissionError(
            f"Redis refused ACL user {user!r}: {type(exc).__name__}: {exc}; grant what it "
            "needs in the ACL (`recsys redis-acl`) or fix the user and password in REDIS_URL"
        )
    return StoreUnavailableError(f"Redis: {type(exc).__name__}: {exc}")


def _acl_user(client: Any) -> str:
    """The ACL user ``client`` logs in as (from REDIS_URL), for error messages."""
    holders = (getattr(client, "connection_pool", None), getattr(client, "nodes_manager", None))
    for holder in holders:
        kwargs = getattr(holder, "connection_kwargs", None)
        if isinstance(kwargs, dict) and kwargs.get("username"):
            return str(kwargs["username"])
    return "default"


def _store_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise the client library's errors from ``method`` as StoreUnavailableError, or as
    StorePermissionError when the ACL denied them."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except _CLIENT_ERRORS as exc:
            owner = args[0] if args else None
            store = getattr(owner, "_store", owner)  # a pending apply reports its store's user
            raise _store_error(exc, getattr(store, "acl_user", "default")) from exc

    return wrapper


def _num(value: float) -> str:
    """Full-precision float text (``repr`` round-trips exactly)."""
    return repr(float(value))


DEFAULT_MAX_EVENTS_PER_SCRIPT = 500


class RedisFeatureStore:
    """Owns the scripts and issues them over ``client`` (``redis.Redis`` or a
    ``RedisCluster``, built by :func:`recsys.store.open_store`); ``close`` closes it.

    ``cluster`` selects the slot-grouped write layout (required by Redis Cluster,
    valid on any Redis); ``max_events_per_script`` caps the events one script
    call applies, which caps how long it blocks the server.
    """

    def __init__(
        self,
        client: Any,
        keys: KeySchema | None = None,
        config: StoreConfig | None = None,
        *,
        cluster: bool = False,
        max_events_per_script: int = DEFAULT_MAX_EVENTS_PER_SCRIPT,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        if max_events_per_script < 1:
            raise ValueError("max_events_per_script must be positive")
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ValueError("wait_replicas must be >= 0 and wait_timeout_ms positive")
        if wait_replicas and cluster:
            raise ValueError("wait_replicas is not supported on a Redis Cluster client")
        self.client = client
        self.acl_user = _acl_user(client)
        self.keys = keys or KeySchema()
        self.config = config or StoreConfig()
        self.cluster = cluster
        self.max_events_per_script = max_events_per_script
        # WAIT after every write batch (see _waited): 0 = never, today's behaviour.
        self.wait_replicas = wait_replicas
        # A redis+sentinel:// client: its connections find the primary in connect().
        self._sentinel = hasattr(getattr(client, "connection_pool", None), "get_master_address")
        self.wait_timeout_ms = wait_timeout_ms
        self._rate = decay_rate(self.config.trending_half_life_s)
        self._sources = script_sources()
        self._sha: dict[str, str] = {}
        self.round_trips = 0  # network round trips issued, for benchmarks
        # Per user, the four keys a batch script declares, and the part of a
        # recent-list entry before its time, per (item, type, weight): both recur across
        # batches and cost more to rebuild than to look up. Bounded (cleared when full).
        self._user_keys: dict[str, tuple[str, str, str, str]] = {}
        self._entry_heads: dict[tuple[str, str, str], str] = {}
        # Per user: [time of the last maintenance this process saw done (the dedup memory
        # pruned, the four keys' TTL set in full), events sent since]. A user missing here
        # is due; see _BatchCalls.maintained. Bounded (cleared when full: everyone is due).
        self._maintained: dict[str, list[float]] = {}
        # get_serving_state's connections: one per thread, outside the pool (see there).
        self._local = threading.local()
        self._own: list[Any] = []
        self._own_lock = threading.Lock()

    # --- scripts -------------------------------------------------------------------
    @_store_errors
    def load_scripts(self) -> None:
        """(Re)load every script; needed once per Redis server start (the cache is volatile)."""
        if getattr(self.client, "connection_pool", None) is None:
            # A cluster client: its pipelines refuse SCRIPT LOAD, while a direct call is sent
            # to every primary, which is what EVALSHA on any slot needs.
            shas = [self.client.script_load(source) for source in self._sources.values()]
        else:
            pipe = self.client.pipeline(transaction=False)
            for source in self._sources.values():
                pipe.script_load(source)
            shas = pipe.execute()
        self.round_trips += 1
        self._sha = dict(
            zip(
                self._sources,
                (str(s, "ascii") if isinstance(s, bytes) else s for s in shas),
                strict=True,
            )
        )

    def _ensure_loaded(self) -> None:
        if not self._sha:
            self.load_scripts()

    def _run_pipeline(self, build: Any) -> list[Any]:
        """Execute ``build(pipe)``; on NOSCRIPT (Redis restarted) reload and run it again.

        Running it again is safe because every script is idempotent.
        """
        self._ensure_loaded()
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            if self.wait_replicas:
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            try:
                results: list[Any] = pipe.execute()
                self.round_trips += 1
                return self._replicated(results)
            except NoScriptError:
                self.round_trips += 1
                if attempt == 2:
                    raise
                self.load_scripts()
        raise AssertionError("unreachable")

    def _run_raw(self, packed: Callable[[], tuple[bytes, int]]) -> list[Any]:
        """Send ``packed()`` (RESP bytes, command count) and read every reply (one round trip).

        NOSCRIPT (Redis restarted and lost its script cache) reloads the scripts
        and re-sends: the scripts are idempotent.
        """
        self._ensure_loaded()
        for attempt in (1, 2):
            replies = self._read(*self._send(*packed()))
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is None:
                return replies
            if isinstance(error, NoScriptError) and attempt == 1:
                self.load_scripts()
                continue
            raise error
        raise AssertionError("unreachable")

    def _send(self, payload: bytes, count: int) -> tuple[Any, int]:
        """Write ``count`` RESP-packed commands on a pooled connection; replies stay unread.

        redis-py's pipeline encodes each argument through several Python calls;
        packing RESP ourselves with one ``join`` is several times cheaper.
        """
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([payload], check_health=False)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return conn, count

    def _read(self, conn: Any, count: int) -> list[Any]:
        pool = self.client.connection_pool
        try:
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            self.round_trips += 1
            return replies
        except BaseException:
            conn.disconnect()  # replies may be half read: never reuse this connection
            raise
        finally:
            pool.release(conn)

    # --- replication ---------------------------------------------------------------
    def _waited(self, packed: Callable[[], tuple[bytes, int]]) -> Callable[[], tuple[bytes, int]]:
        """``packed`` followed by ``WAIT wait_replicas wait_timeout_ms`` on the same connection.

        Redis replicates asynchronously: a write a primary acknowledged can vanish when
        that primary dies before its replica got it, after the caller already committed
        its Kafka offsets. WAIT blocks until the connection's earlier writes reached that
        many replicas; it counts only writes made on the connection that sends it (a
        fresh connection's WAIT returns at once), which is why it travels in the batch's
        own payload rather than as a call of its own.
        """
        if not self.wait_replicas:
            return packed
        wait = resp_command("WAIT", str(self.wait_replicas), str(self.wait_timeout_ms))

        def with_wait() -> tuple[bytes, int]:
            payload, count = packed()
            return payload + wait.encode("ascii"), count + 1

        return with_wait

    def _replicated(self, replies: list[Any]) -> list[Any]:
        """The batch's replies without WAIT's; StoreUnavailableError when too few replicas
        acknowledged in time (the writes stay on the primary: the caller retries, which the
        scripts' dedup makes safe, and does not commit meanwhile)."""
        if not self.wait_replicas:
            return replies
        acked = replies[-1]
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < self.wait_replicas:
            raise StoreUnavailableError(
                f"writes reached {int(acked)} of {self.wait_replicas} replicas within "
                f"{self.wait_timeout_ms} ms (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS)"
            )
        return replies[:-1]

    # --- writes --------------------------------------------------------------------
    def apply_events(self, events: Sequence[FeatureEvent], now: float | None = None) -> ApplyResult:
        return self.begin_apply(events, now).result()

    @_store_errors
    def begin_apply(self, events: Sequence[FeatureEvent], now: float | None = None) -> PendingApply:
        """Send the batch's scripts and return before Redis answers.

        The caller does other work (polls Kafka) while Redis runs the scripts,
        then calls ``result()``; nothing may be committed before that returns.
        """
        if not events:
            return DoneApply(ApplyResult(0, 0, 0))
        now = time.time() if now is None else now
        calls = self._batch_commands(events, now)
        if not hasattr(self.client, "connection_pool"):  # a RedisCluster client routes by slot
            return DoneApply(calls.outcome(self._run_cluster(calls), len(events)))
        self._ensure_loaded()
        conn, count = self._send(*self._waited(calls.packed)())
        return _RedisPending(self, conn, count, calls, len(events))

    def _run_cluster(self, calls: _BatchCalls) -> list[Any]:
        def build(pipe: Any) -> None:
            for command in calls.args():
                pipe.execute_command(*command)

        return self._run_pipeline(build)

    def _batch_commands(self, events: Sequence[FeatureEvent], now: float) -> _BatchCalls:
        """The script calls for a batch: events grouped per user, cut into calls.

        This loop runs once per event, so it does the least it can: one tuple
        unpack, the two float texts, a cached entry head, one ``extend``.
        """
        cfg = self.config
        per_user: dict[str, list[_Event]] = {}
        heads = self._entry_heads
        if len(heads) > _CACHE_MAX:
            heads.clear()
        for event_id, user_id, item_id, event_type, weight, ts in events:
            if weight.__class__ is float:
                w = repr(weight)
                head = heads.get((item_id, event_type, w))
                if head is None:
                    head = heads[(item_id, event_type, w)] = _entry_head(
                        item_id, event_type, weight
                    )
            else:
                w = _num(weight)
                head = _entry_head(item_id, event_type, weight)
            if ts.__class__ is float and ts - ts == 0.0:  # finite: repr is also its JSON
                t = entry_ts = repr(ts)
            else:
                t, entry_ts = _num(ts), _float_json(ts)
            group = per_user.get(user_id)
            if group is None:
                group = per_user[user_id] = []
            group.append((event_id, item_id, w, t, event_type, f"{head}{entry_ts}}}"))
        head_args = [
            _num(now),
            _num(now - cfg.dedup_window_s),
            str(cfg.dedup_max_user),
            str(cfg.recent_cap),
            str(cfg.user_ttl_s),
            str(cfg.dedup_max_global),
            _num(self._rate),
            _num(cfg.trending_epoch_s),
            str(cfg.trending_max_items),
        ]
        # Maintenance (pruning the user's dedup memory, the four keys' full TTL) is due
        # once 1% of the TTL has passed since this process last saw it done, or once
        # more than a tenth of DEDUP_MAX_USER events were sent since; the script also
        # does it whenever it creates the keys. Between two, a user's keys keep more
        # than 99% of their TTL and the memory at most DEDUP_MAX_USER * 1.1 ids.
        maintained = self._maintained
        if len(maintained) > _CACHE_MAX:
            maintained.clear()
        every = cfg.user_ttl_s / 100.0
        slack = max(1, cfg.dedup_max_user // 10)
        counts: dict[str, str] = {}  # per user: its event count, negative when due
        for user_id, group in per_user.items():
            state = maintained.get(user_id)
            n = len(group)
            if state is None or now - state[0] >= every or state[1] + n > slack:
                counts[user_id] = f"-{n}"
            else:
                state[1] += n
                counts[user_id] = str(n)
        limit = self.max_events_per_script
        calls: list[tuple[str, bool, list[str]]] = []  # (mode, user keys?, users)

        def chunk(users: list[str], mode: str, with_users: bool) -> None:
            members: list[str] = []
            size = 0
            for user_id in users:
                n = len(per_user[user_id])
                if members and size + n > limit:
                    calls.append((mode, with_users, members))
                    members, size = [], 0
                members.append(user_id)
                size += n
            if members:
                calls.append((mode, with_users, members))

        if not self.cluster:
            chunk(list(per_user), _FUSED, True)
        else:
            from redis.crc import key_slot

            by_slot: dict[int, list[str]] = {}
            for user_id in per_user:
                by_slot.setdefault(key_slot(self.keys.recent(user_id).encode()), []).append(user_id)
            for users in by_slot.values():
                chunk(users, _USER_ONLY, True)
            chunk(list(per_user), _GLOBAL_ONLY, False)  # the global part: its own slot
        return _BatchCalls(self, per_user, calls, head_args, counts, now)

    @_store_errors
    def suppress(self, user_id: str, item_id: str, ttl_s: float, now: float | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = time.time() if now is None else now
        self._ensure_loaded()
        sha = self._sha["suppress"]
        key = self.keys.suppressed(user_id)
        self._run_pipeline(
            lambda pipe: pipe.execute_command(
                "EVALSHA", sha, 1, key, item_id, _num(now + ttl_s), _num(now)
            )
        )

    @_store_errors
    def unsuppress(self, user_id: str, item_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        key = self.keys.suppressed(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(key, item_id)
        pipe.zrem(key, item_id)
        if self.wait_replicas:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        expiry, _ = self._replicated(pipe.execute())
        self.round_trips += 1
        return expiry is not None and float(expiry) > now

    @_store_errors
    def update_sentiment(
        self,
        user_id: str,
        score: float,
        ts: float,
        half_life_s: float,
        feedback_id: str | None = None,
        now: float | None = None,
    ) -> Sentiment | None:
        if not -1.0 <= score <= 1.0:
            raise ValueError("sentiment score must be in [-1, 1]")
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self._ensure_loaded()
        now = time.time() if now is None else now
        cfg = self.config
        sha = self._sha["sentiment"]
        keys = (self.keys.sentiment(user_id), self.keys.feedback_applied(user_id))
        args = (
            _num(score), _num(ts), _num(half_life_s), str(cfg.user_ttl_s), feedback_id or "",
            _num(now), _num(now - cfg.dedup_window_s), str(cfg.dedup_max_user),
        )  # fmt: skip
        (raw,) = self._run_pipeline(
            lambda pipe: pipe.execute_command("EVALSHA", sha, 2, *keys, *args)
        )
        if raw[3] in (b"0", "0"):
            return None
        return Sentiment(float(raw[0]), float(raw[1]), float(raw[2]))

    @_store_errors
    def forget_user(self, user_id: str, now: float | None = None) -> int:
        """Three round trips, in an order that a crash or a retry cannot get wrong: the
        forgotten record with a read of the user's dedup ids (one slot); those ids out of
        the global dedup ZSET (the ``{g}`` slot); then the deletion. A failure before the
        deletion leaves the ids readable, so running it again completes it."""
        now = time.time() if now is None else now
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.forgotten(user_id), _num(now))
        pipe.zrange(keys.applied(user_id), 0, -1)
        _, event_ids = pipe.execute()
        self.round_trips += 1
        if event_ids:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(event_ids), _ZREM_CHUNK):
                pipe.zrem(keys.global_applied(), *event_ids[start : start + _ZREM_CHUNK])
            pipe.execute()
            self.round_trips += 1
        self.round_trips += 1
        return int(self.client.delete(*keys.user_keys(user_id)))

    @_store_errors
    def forgotten_users(self) -> dict[str, float]:
        keys = self.keys
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        for raw_key in self.client.scan_iter(match=keys.forgotten_pattern(), count=1000):
            key = _text(raw_key)
            user = keys.user_of_forgotten_key(key)
            if user is not None and key not in seen:  # SCAN may return a key twice
                seen.add(key)
                found.append((key, user))
        out: dict[str, float] = {}
        for start in range(0, len(found), 500):
            chunk = found[start : start + 500]
            pipe = self.client.pipeline(transaction=False)
            for key, _ in chunk:
                pipe.get(key)
            for (_, user), value in zip(chunk, pipe.execute(), strict=True):
                if value is not None:
                    out[user] = float(_text(value))
            self.round_trips += 1
        return out

    # --- reads ---------------------------------------------------------------------
    @_store_errors
    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        now = time.time() if now is None else now
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(keys.recent(user_id), 0, -1)
        pipe.smembers(keys.seen(user_id))
        pipe.hgetall(keys.weights(user_id))
        pipe.zrangebyscore(keys.suppressed(user_id), f"({_num(now)}", "+inf")
        pipe.exists(keys.forgotten(user_id))
        recent, seen, weights, suppressed, forgotten = pipe.execute()
        self.round_trips += 1
        return UserState(
            recent=[Interaction.from_json(raw) for raw in recent],
            seen={_text(s) for s in seen},
            weights={_text(k): float(v) for k, v in weights.items()},
            suppressed={_text(s) for s in suppressed},
            forgotten=bool(forgotten),
        )

    def get_serving_state(self, user_id: str, now: float | None = None) -> UserState:
        """Four keys (seen, weights, live suppressions, the forgotten record) in one round
        trip, recent left out.

        Every Recommend request runs this. On a single server the four commands go out
        as one pre-built RESP write on a connection this store keeps per thread (the
        recommender runs its requests on one loop thread per process), and hiredis
        decodes the replies to text: through redis-py's pipeline object (pool checkout
        and release, per-command packing, response callbacks, retry wrappers) the read
        was a large share of the handler's CPU (docs/benchmarks.md, History, "The
        handler"). A cluster client keeps its pipeline: it routes
        the four commands, which share one hash slot, to their node in one round trip.
        """
        now = time.time() if now is None else now
        try:
            if not hasattr(self.client, "connection_pool"):  # a RedisCluster client
                seen, weights, suppressed, forgotten = self._serving_pipelined(user_id, now)
                self.round_trips += 1
                return UserState(
                    recent=[],
                    seen={_text(s) for s in seen},
                    weights={_text(k): float(v) for k, v in weights.items()},
                    suppressed={_text(s) for s in suppressed},
                    forgotten=bool(forgotten),
                )
            seen, pairs, suppressed, forgotten = self._serving_direct(user_id, now)  # text
        except _CLIENT_ERRORS as exc:
            raise _store_error(exc, self.acl_user) from exc
        self.round_trips += 1
        if isinstance(pairs, dict):  # RESP3 (protocol=3 in REDIS_URL)
            weights = {k: float(v) for k, v in pairs.items()}
        else:
            weights = dict(zip(pairs[::2], map(float, pairs[1::2]), strict=True))
        return UserState(
            recent=[],
            seen=set(seen),
            weights=weights,
            suppressed=set(suppressed),
            forgotten=bool(forgotten),
        )

    def _serving_pipelined(self, user_id: str, now: float) -> list[Any]:
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(keys.seen(user_id))
        pipe.hgetall(keys.weights(user_id))
        pipe.zrangebyscore(keys.suppressed(user_id), f"({_num(now)}", "+inf")
        pipe.exists(keys.forgotten(user_id))
        out: list[Any] = pipe.execute()
        return out

    def _serving_connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            pool = self.client.connection_pool
            conn = pool.connection_class(**{**pool.connection_kwargs, "decode_responses": True})
            self._local.conn = conn
            with self._own_lock:
                self._own.append(conn)
        return conn

    def _serving_direct(self, user_id: str, now: float) -> tuple[Any, Any, Any, Any]:
        """The four replies, read from this thread's own connection.

        Any failure drops the connection (a half-read reply must never be parsed by the
        next request). A connection error is retried once on a fresh connection: a
        connection the server closed since its last use (Redis restarted) fails on first use.
        """
        keys = self.keys
        packed = (
            resp_command("SMEMBERS", keys.seen(user_id))
            + resp_command("HGETALL", keys.weights(user_id))
            + resp_command("ZRANGEBYSCORE", keys.suppressed(user_id), f"({_num(now)}", "+inf")
            + resp_command("EXISTS", keys.forgotten(user_id))
        ).encode("utf-8")
        conn = self._serving_connection()
        read = conn.read_response
        for attempt in (0, 1):
            try:
                if self._sentinel:
                    # send_packed_command connects to the connection's own host/port;
                    # connect() is where a Sentinel-managed one asks for the primary.
                    conn.connect()
                conn.send_packed_command([packed])
                return read(), read(), read(), read()
            except redis.exceptions.ConnectionError:
                conn.disconnect()
                if attempt:
                    raise
            except BaseException:
                conn.disconnect()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @_store_errors
    def get_sentiment(self, user_id: str) -> Sentiment | None:
        self.round_trips += 1
        raw = self.client.hmget(self.keys.sentiment(user_id), "avg", "n", "ts")
        if raw[0] is None:
            return None
        return Sentiment(float(raw[0]), float(raw[1]), float(raw[2]))

    @_store_errors
    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        now = time.time() if now is None else now
        self.round_trips += 1
        rows = self.client.zrange(self.keys.trending(), 0, n - 1, desc=True, withscores=True)
        epoch = self.config.trending_epoch_s
        return [(_text(item), decayed_score(float(s), now, self._rate, epoch)) for item, s in rows]

    @_store_errors
    def trending_log_scores(self) -> dict[str, float]:
        self.round_trips += 1
        rows = self.client.zrange(self.keys.trending(), 0, -1, withscores=True)
        return {_text(item): float(s) for item, s in rows}

    @_store_errors
    def counters(self) -> dict[str, int]:
        self.round_trips += 1
        return {_text(k): int(v) for k, v in self.client.hgetall(self.keys.counters()).items()}

    @_store_errors
    def ping(self) -> bool:
        return bool(self.client.ping())

    @_store_errors
    def close(self) -> None:
        with self._own_lock:
            own, self._own = self._own, []
        for conn in own:
            conn.disconnect()
        self.client.close()


def _bulk(arg: str) -> str:
    """RESP bulk string of ``arg`` (as text: for ASCII, nearly all, characters are bytes)."""
    size = len(arg) if arg.isascii() else len(arg.encode("utf-8"))
    return f"${size}\r\n{arg}\r\n"


def resp_command(*args: str) -> str:
    """One command in RESP (an array of bulk strings), ready to encode and write."""
    return f"*{len(args)}\r\n" + "".join(map(_bulk, args))


def _entry_head(item_id: str, event_type: str, weight: float) -> str:
    """A recent-list entry up to its time: ``head + ts + "}"`` is ``FeatureEvent.recent_entry``."""
    return (
        f'{{"item":{_quote(item_id)},"type":{_quote(event_type)},'
        f'"weight":{_float_json(weight)},"ts":'
    )


_CACHE_MAX = 100_000
# Event ids per ZREM when a forgotten user's ids leave the global dedup ZSET (the per-user
# memory holds at most DEDUP_MAX_USER ids, 1,000 by default: usually one command).
_ZREM_CHUNK = 1000


# The batch script's modes (ARGV[10]; recsys/store/lua/batch.lua).
_USER_ONLY = "0"  # user part only (Redis Cluster: one slot group of users)
_FUSED = "1"  # user part and the global part of what it applied, one dedup for both
_GLOBAL_ONLY = "2"  # global part only, with its own dedup (Redis Cluster's {g} call)
_GLOBAL_KEYS = {_USER_ONLY: 0, _FUSED: 2, _GLOBAL_ONLY: 3}


#: one event's six script arguments: id, item, weight, ts, type, recent-list entry
_Event = tuple[str, str, str, str, str, str]


class _BatchCalls:
    """The script calls of one batch, rendered at send time (the SHA changes on a reload).

    ``args`` gives the calls as argument lists (each user's four keys from the
    store's cache), for a cluster client's pipeline; ``packed`` is the standalone
    path: the same arguments in RESP, ready to write.
    ``outcome`` reads the replies and records which users' maintenance was done.
    """

    def __init__(
        self,
        store: RedisFeatureStore,
        per_user: dict[str, list[_Event]],
        calls: list[tuple[str, bool, list[str]]],
        head: list[str],
        counts: dict[str, str],
        now: float,
    ) -> None:
        self._store = store
        self._per_user = per_user
        self._calls = calls
        self._head = head
        self._counts = counts
        self._now = now

    def __len__(self) -> int:
        return len(self._calls)

    def args(self) -> list[list[str]]:
        """Every call's arguments: EVALSHA, the SHA, the keys, the scalars, the mode, then
        per user its count (negative when maintenance is due) and six strings per event."""
        store = self._store
        keys = store.keys
        cache = store._user_keys
        if len(cache) > _CACHE_MAX:
            cache.clear()
        per_user = self._per_user
        counts = self._counts
        sha = store._sha["batch"]
        global_keys = [keys.trending(), keys.counters(), keys.global_applied()]
        out = []
        for mode, with_users, users in self._calls:
            call_keys = global_keys[: _GLOBAL_KEYS[mode]]
            if with_users:
                for user_id in users:
                    user_keys = cache.get(user_id)
                    if user_keys is None:
                        user_keys = cache[user_id] = (
                            keys.recent(user_id),
                            keys.seen(user_id),
                            keys.weights(user_id),
                            keys.applied(user_id),
                        )
                    call_keys += user_keys
            call = ["EVALSHA", sha, str(len(call_keys)), *call_keys, *self._head, mode]
            for user_id in users:
                call.append(counts[user_id])
                for event in per_user[user_id]:
                    call += event
            out.append(call)
        return out

    def packed(self) -> tuple[bytes, int]:
        """The calls in RESP, encoded by hiredis's C ``pack_command`` (byte lengths of
        UTF-8 text): thousands of arguments per call cost far less there than in Python."""
        # hiredis's stub types the argument as a one-element tuple; it takes any length
        packed = b"".join(pack_command(tuple(call)) for call in self.args())  # type: ignore[arg-type]
        return packed, len(self._calls)

    def outcome(self, replies: list[Any], events: int) -> ApplyResult:
        """The batch's result from its replies (one per call, in order); the users whose
        keys the script maintained are not due again for a while."""
        maintained = self._store._maintained
        for (_, with_users, users), reply in zip(self._calls, replies, strict=True):
            if with_users:
                marks = _text(reply[2])
                for user_id, mark in zip(users, marks, strict=True):
                    if mark == "1":
                        maintained[user_id] = [self._now, 0.0]
        return ApplyResult(sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies), events)


class _RedisPending:
    """A batch whose scripts were sent; ``result()`` reads the replies."""

    def __init__(
        self,
        store: RedisFeatureStore,
        conn: Any,
        count: int,
        calls: _BatchCalls,
        events: int,
    ) -> None:
        self._store = store
        self._conn: Any = conn
        self._count = count
        self._calls = calls
        self._events = events
        self._result: ApplyResult | None = None

    @_store_errors
    def result(self) -> ApplyResult:
        """The batch's outcome; StoreUnavailableError if it (or the connection) failed.

        NOSCRIPT (Redis restarted between load and send) reloads the scripts and
        re-sends the whole batch, which its dedup makes safe.
        """
        if self._result is not None:
            return self._result
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("this pending apply was cancelled or already failed")
        replies = self._store._read(conn, self._count)
        error = next((r for r in replies if isinstance(r, Exception)), None)
        if isinstance(error, NoScriptError):
            self._store.load_scripts()
            replies = self._store._run_raw(self._store._waited(self._calls.packed))
        elif error is not None:
            raise error
        self._result = self._calls.outcome(self._store._replicated(replies), self._events)
        return self._result

    @_store_errors
    def cancel(self) -> None:
        """Drop the connection without reading (the writes may or may not have happened)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._store.client.connection_pool.release(conn)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def dump_features(client: Any, keys: KeySchema) -> dict[str, Any]:
    """A comparable snapshot of every feature key under the prefix (tests, debugging).

    The ``applied`` dedup ZSETs are left out: their scores are application
    times, which differ between two runs that produced identical features.
    Trending log-scores are included as floats; compare them with a tolerance,
    because events of different partitions may interleave differently.
    """
    out: dict[str, Any] = {}
    patterns = [keys.user_pattern(), keys.global_pattern()]
    for pattern in patterns:
        for raw_key in client.scan_iter(match=pattern, count=1000):
            key = _text(raw_key)
            if key.endswith(":applied"):
                continue
            kind = _text(client.type(key))
            if kind == "list":
                out[key] = [_text(v) for v in client.lrange(key, 0, -1)]
            elif kind == "set":
                out[key] = sorted(_text(v) for v in client.smembers(key))
            elif kind == "hash":
                out[key] = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
            elif kind == "zset":
                rows = client.zrange(key, 0, -1, withscores=True)
                out[key] = {_text(m): float(s) for m, s in rows}
            else:
                out[key] = _text(client.get(key) or b"")
    return out
