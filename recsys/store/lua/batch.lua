-- The events service's batch (docs/redis-schema.md, "Writes").
-- KEYS: the global keys of ARGV[10]'s mode, then per user of the call: recent, seen,
--       weights, applied (in the order of the groups in ARGV).
-- ARGV: now, cutoff (now - window), max ids per user, recent cap, ttl_s, max global ids,
--       rate, epoch, max trending items, mode:
--         '0' user part only (no global keys),
--         '1' user part and the global part of what it applied (KEYS: trending, counters):
--             one dedup, the user's, serves both, since one atomic call does both,
--         '2' global part only, deduplicated on its own (KEYS: trending, counters,
--             global applied; a Redis Cluster's global call, no user keys);
--       then one group per user: its event count (negative: maintenance due, i.e. the
--       dedup memory's pruning and the TTL refresh), then 6 strings per event:
--       id, item, weight, ts, type, recent entry.
-- Plain ARGV strings: nothing to decode. Returns {user applied, global applied, marks}:
-- marks has one character per user of the call, '1' where the keys got their full TTL.
local now = ARGV[1]
local mode = ARGV[10]
local base = 0
if mode == '1' then base = 2 elseif mode == '2' then base = 3 end
local fold = mode == '1'
local max_user = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local ttl = ARGV[5]
local rate = tonumber(ARGV[7])
local epoch = tonumber(ARGV[8])
local scores, order, counts = {}, {}, {}
local ua, ga = 0, 0

local function add(item, w, ts, kind)
  counts[kind] = (counts[kind] or 0) + 1
  w = tonumber(w)
  if w > 0 then
    local x = math.log(w) + rate * (tonumber(ts) - epoch)
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
end

local marks = {}
local p = 11
for u = 1, (#KEYS - base) / 4 do
  local k = base + (u - 1) * 4
  local recent, seen, weights, applied = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local c = tonumber(ARGV[p])
  local due = c < 0
  if due then c = -c end
  local q = p + 1
  local n, len = 0, 0
  for _ = 1, c do
    if redis.call('ZADD', applied, 'NX', now, ARGV[q]) == 1 then
      local item = ARGV[q + 1]
      len = redis.call('LPUSH', recent, ARGV[q + 5])
      redis.call('SADD', seen, item)
      redis.call('HINCRBYFLOAT', weights, item, ARGV[q + 2])
      if fold then add(item, ARGV[q + 2], ARGV[q + 3], ARGV[q + 4]) end
      n = n + 1
    end
    q = q + 6
  end
  local mark = '0'
  if n > 0 then
    if len > cap then redis.call('LTRIM', recent, 0, cap - 1) end
    -- len == n: the list did not exist, so neither did the other three (they are
    -- written and expire together): they get their TTL now, whatever the client thinks
    if due or len == n then
      redis.call('ZREMRANGEBYSCORE', applied, '-inf', '(' .. ARGV[2])
      local extra = redis.call('ZCARD', applied) - max_user
      if extra > 0 then redis.call('ZREMRANGEBYRANK', applied, 0, extra - 1) end
      redis.call('EXPIRE', recent, ttl)
      redis.call('EXPIRE', seen, ttl)
      redis.call('EXPIRE', weights, ttl)
      redis.call('EXPIRE', applied, ttl)
      mark = '1'
    end
    ua = ua + n
  end
  marks[u] = mark
  p = q
end
if fold then ga = ua end

local trending, counters = KEYS[1], KEYS[2]
if mode == '2' then
  local gapplied = KEYS[3]
  while p <= #ARGV do
    local c = tonumber(ARGV[p])
    if c < 0 then c = -c end
    local q = p + 1
    for _ = 1, c do
      if redis.call('ZADD', gapplied, 'NX', now, ARGV[q]) == 1 then
        add(ARGV[q + 1], ARGV[q + 2], ARGV[q + 3], ARGV[q + 4])
        ga = ga + 1
      end
      q = q + 6
    end
    p = q
  end
  if ga > 0 then
    redis.call('ZREMRANGEBYSCORE', gapplied, '-inf', '(' .. ARGV[2])
    local extra = redis.call('ZCARD', gapplied) - tonumber(ARGV[6])
    if extra > 0 then redis.call('ZREMRANGEBYRANK', gapplied, 0, extra - 1) end
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
  local extra = redis.call('ZCARD', trending) - tonumber(ARGV[9])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', trending, 0, extra - 1) end
end
return {ua, ga, table.concat(marks)}
