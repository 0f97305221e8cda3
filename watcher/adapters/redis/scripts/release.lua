-- release: give a claimed retry ticket back, due again after a delay on Redis's clock.
-- KEYS[1] tickets hash   KEYS[2] inflight zset   KEYS[3] due zset   KEYS[4] claims hash
-- ARGV[1] ticket id  ARGV[2] delay ms  ARGV[3] claim number ('' = any claim)
-- -> 1 requeued | 0 unknown ticket (already settled), or claimed again by someone else since
--    (that claim owns it now): nothing changed
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[3] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
return 1
