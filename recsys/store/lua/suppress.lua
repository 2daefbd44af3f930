-- Hide an item from a user until an expiry; a shorter suppression never shortens one.
-- KEYS: the user's suppressed ZSET; ARGV: item, expiry, now
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(last[2]) - tonumber(ARGV[3])) + 1)
end
return 1
