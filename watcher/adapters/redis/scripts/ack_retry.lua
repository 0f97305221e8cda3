-- ack_retry: forget a ticket for good (its Job was re-created).
-- KEYS[1] tickets hash   KEYS[2] inflight zset   KEYS[3] due zset
-- ARGV[1] ticket id
-- -> 1 acked now | 0 the ticket was already gone
-- A script (not a MULTI) so that it is fenced like every other write.
local deleted = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return deleted
