-- The events service's batch: per-user updates and the global part, each deduplicated
-- on its own (docs/redis-schema.md, "Writes").
-- KEYS: [trending, counters, global applied] when ARGV[10] == '1', then per user of the call:
--       recent, seen, weights, applied (in the order of the groups in ARGV[11])
-- ARGV: now, cutoff (now - window), max ids per user, recent cap, ttl_s, max global ids,
--       rate, epoch, max trending items, global flag ('1' or '0'),
--       groups JSON: one array per user, 6 strings per event of that user:
--         [[id, item, weight, ts, type, recent entry, id, ...], ...]
-- The first (#KEYS - base) / 4 groups are the users whose keys are given (all of them, or
-- none in a cluster's global-only call); the global part, when flagged, reads every group.
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
