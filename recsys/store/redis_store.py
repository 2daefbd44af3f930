"""FeatureStore on Redis: one pipeline of server-side scripts per batch.

A batch costs one network round trip: an ``EVALSHA`` of the user script per
user present in the batch (each touches only that user's ``{u:<id>}`` slot) and
one ``EVALSHA`` of the global script (the ``{g}`` slot), all pipelined. Each
script checks its own ``applied`` ZSET of event ids before changing anything,
so re-running a batch, or the part of it that a crash interrupted, changes
nothing that was already applied. The scripts respect Redis Cluster's rule that
a script touches keys of one slot only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from recsys.store.decay import decay_rate, decayed_score
from recsys.store.keys import KeySchema
from recsys.store.model import (
    ApplyResult,
    FeatureEvent,
    Interaction,
    Sentiment,
    StoreConfig,
    UserState,
)

# KEYS: recent, seen, weights, applied
# ARGV: now, cutoff (now - window), max_ids, recent_cap, ttl_s,
#       then per event: id, item, weight, entry
USER_SCRIPT = """
local applied = 0
for i = 6, #ARGV, 4 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[4], id) then
    redis.call('ZADD', KEYS[4], ARGV[1], id)
    redis.call('LPUSH', KEYS[1], ARGV[i + 3])
    redis.call('SADD', KEYS[2], ARGV[i + 1])
    redis.call('HINCRBYFLOAT', KEYS[3], ARGV[i + 1], ARGV[i + 2])
    applied = applied + 1
  end
end
if applied > 0 then
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2])
  local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[3])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1) end
  for k = 1, 4 do redis.call('EXPIRE', KEYS[k], ARGV[5]) end
end
return applied
"""

# KEYS: trending, counters, applied
# ARGV: now, cutoff (now - window), max_ids, rate, epoch, max_items,
#       then per event: id, item, weight, ts, type
GLOBAL_SCRIPT = """
local rate = tonumber(ARGV[4])
local epoch = tonumber(ARGV[5])
local applied = 0
for i = 7, #ARGV, 5 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[3], id) then
    redis.call('ZADD', KEYS[3], ARGV[1], id)
    redis.call('HINCRBY', KEYS[2], ARGV[i + 4], 1)
    local w = tonumber(ARGV[i + 2])
    if w > 0 then
      local x = math.log(w) + rate * (tonumber(ARGV[i + 3]) - epoch)
      local old = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
      if old then
        local a = tonumber(old)
        local m = a
        if x > m then m = x end
        x = m + math.log(math.exp(a - m) + math.exp(x - m))
      end
      redis.call('ZADD', KEYS[1], string.format('%.17g', x), ARGV[i + 1])
    end
    applied = applied + 1
  end
end
if applied > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
  local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, extra - 1) end
  extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[6])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
end
return applied
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
SENTIMENT_SCRIPT = """
local score = tonumber(ARGV[1])
local ts = tonumber(ARGV[2])
local hl = tonumber(ARGV[3])
local prev = redis.call('HMGET', KEYS[1], 'avg', 'n', 'ts')
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
local fmt = '%.17g'
redis.call('HSET', KEYS[1], 'avg', string.format(fmt, avg), 'n', string.format(fmt, n),
  'ts', string.format(fmt, newts))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {string.format(fmt, avg), string.format(fmt, n), string.format(fmt, newts)}
"""


def _num(value: float) -> str:
    """Full-precision float text (``repr`` round-trips exactly)."""
    return repr(float(value))


class RedisFeatureStore:
    """Owns the scripts and issues them; the client (and its pool) is the caller's."""

    def __init__(
        self, client: Any, keys: KeySchema | None = None, config: StoreConfig | None = None
    ) -> None:
        self.client = client
        self.keys = keys or KeySchema()
        self.config = config or StoreConfig()
        self._rate = decay_rate(self.config.trending_half_life_s)
        self._sources = {
            "user": USER_SCRIPT,
            "global": GLOBAL_SCRIPT,
            "suppress": SUPPRESS_SCRIPT,
            "sentiment": SENTIMENT_SCRIPT,
        }
        self._sha: dict[str, str] = {}
        self.round_trips = 0  # network round trips issued, for benchmarks

    # --- scripts -------------------------------------------------------------------
    def load_scripts(self) -> None:
        """(Re)load every script; needed once per Redis server start (the cache is volatile)."""
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

    def _run_raw(self, commands: Callable[[], list[list[str]]]) -> list[Any]:
        """Send ``commands()`` as one packed pipeline and read every reply (one round trip).

        redis-py's pipeline encodes each argument through several Python calls;
        batches here carry tens of thousands of arguments, so packing RESP with
        one ``join`` is several times cheaper. NOSCRIPT (Redis restarted and lost
        its script cache) reloads the scripts and re-sends: the scripts are idempotent.
        """
        import redis

        self._ensure_loaded()
        for attempt in (1, 2):
            batch = commands()
            replies = self._send_and_read(_pack(batch), len(batch))
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is None:
                return replies
            if isinstance(error, redis.exceptions.NoScriptError) and attempt == 1:
                self.load_scripts()
                continue
            raise error
        raise AssertionError("unreachable")

    def _send_and_read(self, packed: bytes, count: int) -> list[Any]:
        import redis

        pool = self.client.connection_pool
        conn = pool.get_connection("EVALSHA")
        try:
            conn.send_packed_command([packed])
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
        if not events:
            return ApplyResult(0, 0, 0)
        now = time.time() if now is None else now
        cfg = self.config
        keys = self.keys
        by_user: dict[str, list[str]] = {}
        global_args: list[str] = [
            _num(now),
            _num(now - cfg.dedup_window_s),
            str(cfg.dedup_max_global),
            _num(self._rate),
            _num(cfg.trending_epoch_s),
            str(cfg.trending_max_items),
        ]
        for ev in events:
            weight = _num(ev.weight)
            args = by_user.get(ev.user_id)
            if args is None:
                args = by_user[ev.user_id] = []
            args += (ev.event_id, ev.item_id, weight, ev.recent_entry())
            global_args += (ev.event_id, ev.item_id, weight, _num(ev.ts), ev.event_type)
        user_head = [
            _num(now),
            _num(now - cfg.dedup_window_s),
            str(cfg.dedup_max_user),
            str(cfg.recent_cap),
            str(cfg.user_ttl_s),
        ]

        def commands() -> list[list[str]]:
            user_sha = self._sha["user"]
            out = [
                [
                    "EVALSHA",
                    user_sha,
                    "4",
                    keys.recent(user_id),
                    keys.seen(user_id),
                    keys.weights(user_id),
                    keys.applied(user_id),
                    *user_head,
                    *args,
                ]
                for user_id, args in by_user.items()
            ]
            out.append(
                [
                    "EVALSHA",
                    self._sha["global"],
                    "3",
                    keys.trending(),
                    keys.counters(),
                    keys.global_applied(),
                    *global_args,
                ]
            )
            return out

        results = self._run_raw(commands)
        return ApplyResult(sum(int(r) for r in results[:-1]), int(results[-1]), len(events))

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
        self, user_id: str, score: float, ts: float, half_life_s: float
    ) -> Sentiment:
        if not -1.0 <= score <= 1.0:
            raise ValueError("sentiment score must be in [-1, 1]")
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self._ensure_loaded()
        sha = self._sha["sentiment"]
        key = self.keys.sentiment(user_id)
        ttl = str(self.config.user_ttl_s)
        (raw,) = self._run_pipeline(
            lambda pipe: pipe.execute_command(
                "EVALSHA", sha, 1, key, _num(score), _num(ts), _num(half_life_s), ttl
            )
        )
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


def _pack(commands: list[list[str]]) -> bytes:
    """RESP encoding of several commands, for one ``sendall``."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg.encode("utf-8")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)


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
