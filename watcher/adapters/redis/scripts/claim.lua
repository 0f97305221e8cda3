-- claim: hand out due retry tickets under a lease, after requeueing expired leases.
-- KEYS[1] due zset   KEYS[2] inflight zset   KEYS[3] tickets hash
-- ARGV[1] now ms  ARGV[2] limit  ARGV[3] lease-until ms  ARGV[4] requeue batch
-- 1. inflight tickets whose lease expired (score <= now) go back to due, scored by that expiry;
-- 2. up to `limit` due tickets (score <= now), earliest first, move to inflight at lease-until.
-- -> {requeued, orphans, id1, body1, id2, body2, ...}; orphans = due ids without a body (dropped)
local expired = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[1], 'BYSCORE',
                           'LIMIT', 0, ARGV[4], 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZADD', KEYS[1], expired[i + 1], expired[i])
  redis.call('ZREM', KEYS[2], expired[i])
end
local out = {#expired / 2, 0}
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local body = redis.call('HGET', KEYS[3], id)
  if body then
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    out[#out + 1] = id
    out[#out + 1] = body
  else
    out[2] = out[2] + 1
  end
end
return out
