"""FeatureStore on Redis: a batch of events is one round trip of server-side scripts.

Standalone Redis (the default): the batch's users are cut into chunks of at most
``max_events_per_script`` events, and each chunk is ONE ``EVALSHA`` of the batch
script covering all its users' keys plus the global ``{g}`` keys; the chunks are
pipelined, so a batch of 2,000 events is a handful of script calls and one
round trip. Chunking bounds how long one script blocks other clients (readers).

Redis Cluster (``cluster=True``): a script may only touch keys of one slot, so
users are grouped by the slot of their ``{u:<id>}`` hash tag (one call per slot
group, per-user part only) and the global part is a call of its own.

Each part checks its own ``applied`` ZSET of event ids before changing anything,
so re-running a batch, or the part of it that a crash interrupted, changes
nothing that was already applied. :meth:`RedisFeatureStore.begin_apply` sends a
batch without waiting, so the caller can poll Kafka while Redis works.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

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

# KEYS: [trending, counters, global applied] when ARGV[10] == '1', then per user of the call:
#       recent, seen, weights, applied (in the order of the groups in ARGV[11])
# ARGV: now, cutoff (now - window), max ids per user, recent cap, ttl_s, max global ids,
#       rate, epoch, max trending items, global flag ('1' or '0'),
#       groups JSON: one array per user, 6 strings per event of that user:
#         [[id, item, weight, ts, type, recent entry, id, ...], ...]
# The first (#KEYS - base) / 4 groups are the users whose keys are given (all of them, or
# none in a cluster's global-only call); the global part, when flagged, reads every group.
BATCH_SCRIPT = r"""
local now = ARGV[1]
local cutoff = '(' .. ARGV[2]
local ua, ga = 0, 0
local with_global = ARGV[10] == '1'
local base = 0
if with_global then base = 3 end
local groups = cjson.decode(ARGV[11])
local max_user = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local ttl = ARGV[5]
local refresh_below = tonumber(ttl) - math.floor(tonumber(ttl) / 100)
for u = 1, (#KEYS - base) / 4 do
  local ev = groups[u]
  local k = base + (u - 1) * 4
  local recent, seen, weights, applied = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local n, len = 0, 0
  for i = 1, #ev, 6 do
    if redis.call('ZADD', applied, 'NX', now, ev[i]) == 1 then
      len = redis.call('LPUSH', recent, ev[i + 5])
      redis.call('SADD', seen, ev[i + 1])
      redis.call('HINCRBYFLOAT', weights, ev[i + 1], ev[i + 2])
      n = n + 1
    end
  end
  if n > 0 then
    if len > cap then redis.call('LTRIM', recent, 0, cap - 1) end
    redis.call('ZREMRANGEBYSCORE', applied, '-inf', cutoff)
    local extra = redis.call('ZCARD', applied) - max_user
    if extra > 0 then redis.call('ZREMRANGEBYRANK', applied, 0, extra - 1) end
    -- the four keys always get their TTL together, so one TTL read tells whether the
    -- refresh is due: skipped while more than ttl - 1% is left (saves 3 calls a user)
    if redis.call('TTL', recent) < refresh_below then
      redis.call('EXPIRE', recent, ttl)
      redis.call('EXPIRE', seen, ttl)
      redis.call('EXPIRE', weights, ttl)
      redis.call('EXPIRE', applied, ttl)
    end
    ua = ua + n
  end
end
if with_global then
  local trending, counters, gapplied = KEYS[1], KEYS[2], KEYS[3]
  local rate = tonumber(ARGV[7])
  local epoch = tonumber(ARGV[8])
  local scores, order, counts = {}, {}, {}
  for g = 1, #groups do
    local evs = groups[g]
    for i = 1, #evs, 6 do
      if redis.call('ZADD', gapplied, 'NX', now, evs[i]) == 1 then
        local kind = evs[i + 4]
        counts[kind] = (counts[kind] or 0) + 1
        local w = tonumber(evs[i + 2])
        if w > 0 then
          local item = evs[i + 1]
          local x = math.log(w) + rate * (tonumber(evs[i + 3]) - epoch)
          local s = scores[item]
          if s == nil then
            order[#order + 1] = item
          else
            local m = s
            if x > m then m = x end
            x = m + math.log(math.exp(s - m) + math.exp(x - m))
          end
          scores[item] = x
        end
        ga = ga + 1
      end
    end
  end
  if ga > 0 then
    for _, item in ipairs(order) do
      local x = scores[item]
      local old = redis.call('ZSCORE', trending, item)
      if old then
        local a = tonumber(old)
        local m = a
        if x > m then m = x end
        x = m + math.log(math.exp(a - m) + math.exp(x - m))
      end
      redis.call('ZADD', trending, string.format('%.17g', x), item)
    end
    for kind, c in pairs(counts) do redis.call('HINCRBY', counters, kind, c) end
    redis.call('ZREMRANGEBYSCORE', gapplied, '-inf', cutoff)
    local extra = redis.call('ZCARD', gapplied) - tonumber(ARGV[6])
    if extra > 0 then redis.call('ZREMRANGEBYRANK', gapplied, 0, extra - 1) end
    extra = redis.call('ZCARD', trending) - tonumber(ARGV[9])
    if extra > 0 then redis.call('ZREMRANGEBYRANK', trending, 0, extra - 1) end
  end
end
return {ua, ga}
"""

# KEYS: suppressed; ARGV: item, expiry, now
SUPPRESS_SCRIPT = """
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(last[2]) - tonumber(ARGV[3])) + 1)
end
return 1
"""

# KEYS: sentiment; ARGV: score, ts, half_life_s, ttl_s
# KEYS: the user's sentiment hash, the user's feedback:applied ZSET
# ARGV: score, ts, half-life, ttl_s, feedback id ('' = no dedup), now,
#       cutoff (now - window), max ids per user
SENTIMENT_SCRIPT = """
local score = tonumber(ARGV[1])
local ts = tonumber(ARGV[2])
local hl = tonumber(ARGV[3])
local fmt = '%.17g'
local prev = redis.call('HMGET', KEYS[1], 'avg', 'n', 'ts')
if ARGV[5] ~= '' then
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[5]) == 0 then
    -- this feedback record was folded in already (a replay): change nothing
    return {prev[1] or false, prev[2] or false, prev[3] or false, '0'}
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[8])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
local avg, n, newts
if not prev[1] then
  avg, n, newts = score, 1.0, ts
else
  local pavg, pn, pts = tonumber(prev[1]), tonumber(prev[2]), tonumber(prev[3])
  if ts >= pts then
    local d = 2.0 ^ (-(ts - pts) / hl)
    n = pn * d + 1.0
    avg = (pavg * pn * d + score) / n
    newts = ts
  else
    local d = 2.0 ^ (-(pts - ts) / hl)
    n = pn + d
    avg = (pavg * pn + score * d) / n
    newts = pts
  end
end
redis.call('HSET', KEYS[1], 'avg', string.format(fmt, avg), 'n', string.format(fmt, n),
  'ts', string.format(fmt, newts))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {string.format(fmt, avg), string.format(fmt, n), string.format(fmt, newts), '1'}
"""


def _num(value: float) -> str:
    """Full-precision float text (``repr`` round-trips exactly)."""
    return repr(float(value))


DEFAULT_MAX_EVENTS_PER_SCRIPT = 500


class RedisFeatureStore:
    """Owns the scripts and issues them; the client (and its pool) is the caller's.

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
    ) -> None:
        if max_events_per_script < 1:
            raise ValueError("max_events_per_script must be positive")
        self.client = client
        self.keys = keys or KeySchema()
        self.config = config or StoreConfig()
        self.cluster = cluster
        self.max_events_per_script = max_events_per_script
        self._rate = decay_rate(self.config.trending_half_life_s)
        self._sources = {
            "batch": BATCH_SCRIPT,
            "suppress": SUPPRESS_SCRIPT,
            "sentiment": SENTIMENT_SCRIPT,
        }
        self._sha: dict[str, str] = {}
        self.round_trips = 0  # network round trips issued, for benchmarks
        # Per-user RESP text of the four keys a batch script declares, and the part of a
        # recent-list entry before its time, per (item, type, weight): both recur across
        # batches and cost more to rebuild than to look up. Bounded (cleared when full).
        self._user_resp: dict[str, str] = {}
        self._entry_heads: dict[tuple[str, str, str], str] = {}

    # --- scripts -------------------------------------------------------------------
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
        import redis

        self._ensure_loaded()
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            try:
                results: list[Any] = pipe.execute()
                self.round_trips += 1
                return results
            except redis.exceptions.NoScriptError:
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
        import redis

        self._ensure_loaded()
        for attempt in (1, 2):
            replies = self._read(*self._send(*packed()))
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is None:
                return replies
            if isinstance(error, redis.exceptions.NoScriptError) and attempt == 1:
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
        import redis

        pool = self.client.connection_pool
        try:
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
            self.round_trips += 1
            return replies
        except BaseException:
            conn.disconnect()  # replies may be half read: never reuse this connection
            raise
        finally:
            pool.release(conn)

    # --- writes --------------------------------------------------------------------
    def apply_events(self, events: Sequence[FeatureEvent], now: float | None = None) -> ApplyResult:
        return self.begin_apply(events, now).result()

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
            return DoneApply(self._combine(self._run_cluster(calls), len(events)))
        self._ensure_loaded()
        conn, count = self._send(*calls.packed())
        return _RedisPending(self, conn, count, calls.packed, len(events))

    def _run_cluster(self, calls: _BatchCalls) -> list[Any]:
        def build(pipe: Any) -> None:
            for command in calls.args():
                pipe.execute_command(*command)

        return self._run_pipeline(build)

    @staticmethod
    def _combine(replies: list[Any], events: int) -> ApplyResult:
        return ApplyResult(sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies), events)

    def _batch_commands(self, events: Sequence[FeatureEvent], now: float) -> _BatchCalls:
        """The script calls for a batch: events grouped per user, cut into calls.

        This loop runs once per event, so it does the least it can: one tuple
        unpack, the two float texts, a cached entry head, one ``extend``.
        """
        cfg = self.config
        per_user: dict[str, list[str]] = {}
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
            group += (event_id, item_id, w, t, event_type, f"{head}{entry_ts}}}")
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
        limit = self.max_events_per_script
        calls: list[tuple[bool, bool, list[str]]] = []  # (global part?, user keys?, users)

        def chunk(users: list[str], with_global: bool, with_users: bool) -> None:
            members: list[str] = []
            size = 0
            for user_id in users:
                n = len(per_user[user_id]) // 6
                if members and size + n > limit:
                    calls.append((with_global, with_users, members))
                    members, size = [], 0
                members.append(user_id)
                size += n
            if members:
                calls.append((with_global, with_users, members))

        if not self.cluster:
            chunk(list(per_user), True, True)
        else:
            from redis.crc import key_slot

            by_slot: dict[int, list[str]] = {}
            for user_id in per_user:
                by_slot.setdefault(key_slot(self.keys.recent(user_id).encode()), []).append(user_id)
            for users in by_slot.values():
                chunk(users, False, True)
            chunk(list(per_user), True, False)  # the global part: keys of one slot of its own
        return _BatchCalls(self, per_user, calls, head_args)

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

    def forget_user(self, user_id: str) -> int:
        self.round_trips += 1
        return int(self.client.delete(*self.keys.user_keys(user_id)))

    # --- reads ---------------------------------------------------------------------
    def get_user_state(self, user_id: str, now: float | None = None) -> UserState:
        now = time.time() if now is None else now
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(keys.recent(user_id), 0, -1)
        pipe.smembers(keys.seen(user_id))
        pipe.hgetall(keys.weights(user_id))
        pipe.zrangebyscore(keys.suppressed(user_id), f"({_num(now)}", "+inf")
        recent, seen, weights, suppressed = pipe.execute()
        self.round_trips += 1
        return UserState(
            recent=[Interaction.from_json(raw) for raw in recent],
            seen={_text(s) for s in seen},
            weights={_text(k): float(v) for k, v in weights.items()},
            suppressed={_text(s) for s in suppressed},
        )

    def get_sentiment(self, user_id: str) -> Sentiment | None:
        self.round_trips += 1
        raw = self.client.hmget(self.keys.sentiment(user_id), "avg", "n", "ts")
        if raw[0] is None:
            return None
        return Sentiment(float(raw[0]), float(raw[1]), float(raw[2]))

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        now = time.time() if now is None else now
        self.round_trips += 1
        rows = self.client.zrange(self.keys.trending(), 0, n - 1, desc=True, withscores=True)
        epoch = self.config.trending_epoch_s
        return [(_text(item), decayed_score(float(s), now, self._rate, epoch)) for item, s in rows]

    def trending_log_scores(self) -> dict[str, float]:
        self.round_trips += 1
        rows = self.client.zrange(self.keys.trending(), 0, -1, withscores=True)
        return {_text(item): float(s) for item, s in rows}

    def counters(self) -> dict[str, int]:
        self.round_trips += 1
        return {_text(k): int(v) for k, v in self.client.hgetall(self.keys.counters()).items()}

    def ping(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
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


def _json(value: Any) -> str:
    """Compact JSON that keeps non-ASCII as UTF-8 (the script's cjson reads either)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _BatchCalls:
    """The script calls of one batch, rendered at send time (the SHA changes on a reload).

    ``packed`` is the standalone path: RESP built as one text, each user's
    four keys taken from the store's cache. ``args`` gives the same calls as
    argument lists, for a cluster client's pipeline (and for inspection).
    """

    def __init__(
        self,
        store: RedisFeatureStore,
        per_user: dict[str, list[str]],
        calls: list[tuple[bool, bool, list[str]]],
        head: list[str],
    ) -> None:
        self._store = store
        self._per_user = per_user
        self._calls = calls
        self._head = head

    def __len__(self) -> int:
        return len(self._calls)

    def _groups(self, users: list[str]) -> str:
        per_user = self._per_user
        return _json([per_user[u] for u in users])

    def args(self) -> list[list[str]]:
        store = self._store
        keys = store.keys
        global_keys = [keys.trending(), keys.counters(), keys.global_applied()]
        sha = store._sha["batch"]
        out = []
        for with_global, with_users, users in self._calls:
            call_keys = list(global_keys) if with_global else []
            if with_users:
                for user_id in users:
                    call_keys += (
                        keys.recent(user_id),
                        keys.seen(user_id),
                        keys.weights(user_id),
                        keys.applied(user_id),
                    )
            out.append(
                [
                    "EVALSHA",
                    sha,
                    str(len(call_keys)),
                    *call_keys,
                    *self._head,
                    "1" if with_global else "0",
                    self._groups(users),
                ]
            )
        return out

    def packed(self) -> tuple[bytes, int]:
        store = self._store
        keys = store.keys
        cache = store._user_resp
        if len(cache) > _CACHE_MAX:
            cache.clear()
        global_resp = "".join(map(_bulk, (keys.trending(), keys.counters(), keys.global_applied())))
        sha_resp = _bulk(store._sha["batch"])
        head_resp = "".join(map(_bulk, self._head))
        parts: list[str] = []
        append = parts.append
        for with_global, with_users, users in self._calls:
            nkeys = (3 if with_global else 0) + (4 * len(users) if with_users else 0)
            append(f"*{nkeys + 14}\r\n$7\r\nEVALSHA\r\n{sha_resp}{_bulk(str(nkeys))}")
            if with_global:
                append(global_resp)
            if with_users:
                for user_id in users:
                    user_resp = cache.get(user_id)
                    if user_resp is None:
                        user_resp = cache[user_id] = (
                            _bulk(keys.recent(user_id))
                            + _bulk(keys.seen(user_id))
                            + _bulk(keys.weights(user_id))
                            + _bulk(keys.applied(user_id))
                        )
                    append(user_resp)
            append(head_resp)
            append(_bulk("1" if with_global else "0"))
            append(_bulk(self._groups(users)))
        return "".join(parts).encode("utf-8"), len(self._calls)


class _RedisPending:
    """A batch whose scripts were sent; ``result()`` reads the replies."""

    def __init__(
        self,
        store: RedisFeatureStore,
        conn: Any,
        count: int,
        commands: Callable[[], tuple[bytes, int]],
        events: int,
    ) -> None:
        self._store = store
        self._conn: Any = conn
        self._count = count
        self._commands = commands
        self._events = events
        self._result: ApplyResult | None = None

    def result(self) -> ApplyResult:
        """The batch's outcome; raises the Redis error if it (or the connection) failed.

        NOSCRIPT (Redis restarted between load and send) reloads the scripts and
        re-sends the whole batch, which its dedup makes safe.
        """
        import redis

        if self._result is not None:
            return self._result
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("this pending apply was cancelled or already failed")
        replies = self._store._read(conn, self._count)
        error = next((r for r in replies if isinstance(r, Exception)), None)
        if isinstance(error, redis.exceptions.NoScriptError):
            self._store.load_scripts()
            replies = self._store._run_raw(self._commands)
        elif error is not None:
            raise error
        self._result = self._store._combine(replies, self._events)
        return self._result

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
    patterns = [keys.user_pattern(), f"{keys.prefix}:{{g}}:*"]
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
