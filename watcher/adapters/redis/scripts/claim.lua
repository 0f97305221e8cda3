-- claim: hand out due retry tickets under a lease, after requeueing expired leases.
-- KEYS[1] due zset   KEYS[2] inflight zset   KEYS[3] tickets hash   KEYS[4] claims hash
-- ARGV[1] lease ms  ARGV[2] limit  ARGV[3] requeue batch
-- "Now" is Redis's clock (TIME), never the caller's: replicas whose clocks disagree still
-- agree on which leases ran out and which tickets are due.
-- 1. inflight tickets whose lease expired (score <= now) go back to due, scored by that expiry;
-- 2. up to `limit` due tickets (score <= now), earliest first, move to inflight at now + lease,
--    each with the next number of its claim counter (the fencing token of this claim: only the
--    latest claim may begin a create or settle the ticket).
-- -> {requeued, orphans, now ms, id1, body1, claim1, id2, body2, claim2, ...};
--    orphans = due ids without a body (dropped)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE',
                           'LIMIT', 0, ARGV[3], 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZADD', KEYS[1], expired[i + 1], expired[i])
  redis.call('ZREM', KEYS[2], expired[i])
end
local out = {#expired / 2, 0, now}
local lease_until = now + tonumber(ARGV[1])
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local body = redis.call('HGET', KEYS[3], id)
  if body then
    redis.call('ZADD', KEYS[2], lease_until, id)
    out[#out + 1] = id
    out[#out + 1] = body
    -- not HINCRBY: a value that is not a number (written by hand) must not fail the claim
    local claim = (tonumber(redis.call('HGET', KEYS[4], id) or '0') or 0) + 1
    redis.call('HSET', KEYS[4], id, claim)
    out[#out + 1] = claim
  else
    out[2] = out[2] + 1
  end
end
return out
