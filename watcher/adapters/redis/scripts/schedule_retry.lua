-- schedule_retry: store a retry ticket as due unless the job uid was handled.
-- KEYS[1] outcome marker   KEYS[2] tickets hash   KEYS[3] due zset
-- ARGV[1] ticket id  ARGV[2] payload  ARGV[3] due ms  ARGV[4] marker ttl ms
-- -> {1, marker} written now | {0, marker} already handled (nothing written)
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
local marker = 'retry:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  -- the marker expired but the ticket is still pending: restore the marker, write nothing
  redis.call('SET', KEYS[1], marker, 'PX', ARGV[4])
  return {0, marker}
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[1], marker, 'PX', ARGV[4])
return {1, marker}
