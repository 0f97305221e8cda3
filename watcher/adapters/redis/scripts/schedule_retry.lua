-- schedule_retry: store a retry ticket as due unless the job uid was handled.
-- KEYS[1] outcome marker   KEYS[2] tickets hash   KEYS[3] due zset   KEYS[4] marker index zset
-- KEYS[5] marker sequence
-- ARGV[1] ticket id  ARGV[2] payload  ARGV[3] delay ms  ARGV[4] index member
-- "<namespace>/<job uid>"
-- The ticket is due at Redis's clock (TIME) + delay: the writer's clock never decides when a
-- retry fires (the ticket's own due_at is what the writer thought, for people to read).
-- -> {1, marker} written now | {0, marker} already handled (nothing written)
-- Markers: no TTL, indexed, as in dead_letter.lua (a marker found with a TTL is kept for good
-- again and indexed).
local existing = redis.call('GET', KEYS[1])
if existing then
  if redis.call('PTTL', KEYS[1]) > 0 then
    redis.call('PERSIST', KEYS[1])
    redis.call('ZADD', KEYS[4], 'NX', redis.call('INCR', KEYS[5]), ARGV[4])
  end
  return {0, existing}
end
local seq = redis.call('INCR', KEYS[5])
local marker = 'retry:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  -- the marker is gone (it expired under an older version, or was deleted by hand) but the
  -- ticket is still pending: restore the marker, write nothing
  redis.call('SET', KEYS[1], marker)
  redis.call('ZADD', KEYS[4], seq, ARGV[4])
  return {0, marker}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[1], marker)
redis.call('ZADD', KEYS[4], seq, ARGV[4])
return {1, marker}
