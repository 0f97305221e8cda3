-- release: give a claimed retry ticket back, due again at a new time.
-- KEYS[1] tickets hash   KEYS[2] inflight zset   KEYS[3] due zset
-- ARGV[1] ticket id  ARGV[2] due ms
-- -> 1 requeued | 0 unknown ticket (already acked): nothing changed
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
