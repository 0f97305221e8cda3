-- settle_created: the ticket's Job exists (created now, or found with the ticket's token):
-- ack the ticket and record the Job's uid, in one step.
-- KEYS[1] tickets hash  KEYS[2] inflight zset  KEYS[3] due zset  KEYS[4] claims hash
-- KEYS[5] the ticket's create record  KEYS[6] finalizer zset
-- ARGV[1] ticket id  ARGV[2] claim number ('' = any)  ARGV[3] Job uid ('' = none known)
-- ARGV[4] Job name  ARGV[5] grace ms  ARGV[6] record ttl ms  ARGV[7] finalizer member
-- "<namespace>/<name>/<uid>"
-- -> {1, 1} settled, remove the finalizer now | {1, 0} settled, the finalizer zset has it for
--    later (another claim began a create whose POST may still land: the Job must keep its
--    name until that POST can only get 409) | {0, 0} already settled | {-1, 0} claimed by
--    another replica since: nothing changed (that claim settles it)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {0, 0}
end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then
  return {-1, 0}
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] == '' then
  return {1, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[5], 'uid', ARGV[3], 'name', ARGV[4])
redis.call('PEXPIRE', KEYS[5], ARGV[6])
local at = now
-- `or`: a field that is not a number (written by hand) must not fail the script
if (tonumber(redis.call('HGET', KEYS[5], 'begins') or '0') or 0) > 1 then
  local last = tonumber(redis.call('HGET', KEYS[5], 'last_ms') or now) or now
  at = math.max(now, last + tonumber(ARGV[5]))
end
redis.call('ZADD', KEYS[6], at, ARGV[7])
if at <= now then
  return {1, 1}
end
return {1, 0}
