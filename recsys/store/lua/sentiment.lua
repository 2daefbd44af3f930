-- Fold one scored feedback into the user's time-decayed sentiment average, once per id.
-- KEYS: the user's sentiment hash, the user's feedback:applied ZSET
-- ARGV: score, ts, half-life, ttl_s, feedback id ('' = no dedup), now,
--       cutoff (now - window), max ids per user
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
