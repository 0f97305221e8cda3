-- abandon_retry: a retry that cannot be created becomes a dead letter, in one step.
-- KEYS[1] outcome marker of the failed Job   KEYS[2] dlq stream   KEYS[3] queues set
-- KEYS[4] tickets hash   KEYS[5] inflight zset   KEYS[6] due zset   KEYS[7] claims hash
-- KEYS[8] class index   KEYS[9] namespace index   KEYS[10] index registry (dlq_index.lua)
-- ARGV[1] queue  ARGV[2] payload  ARGV[3] maxlen  ARGV[4] max age ms (0 = no age trim)
-- ARGV[5] stream field  ARGV[6] ticket id  ARGV[7] claim number ('' = any claim)
-- -> {1, marker, trimmed} written now | {0, '', 0} the ticket is gone (settled before)
--    | {-1, '', 0} claimed by another replica since (that claim settles it)
-- The ticket's presence is the once-only guard: a second call (a replica whose lease ran out,
-- a retry after a lost reply) finds it gone and writes nothing. The failed Job's marker (and
-- its index entry, written with the ticket) now names the dead letter.
if redis.call('HEXISTS', KEYS[4], ARGV[6]) == 0 then
  return {0, '', 0}
end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[7], ARGV[6]) ~= ARGV[7] then
  return {-1, '', 0}
end
redis.call('SADD', KEYS[3], ARGV[1])
local id = redis.call('XADD', KEYS[2], '*', ARGV[5], ARGV[2])
local marker = 'dead_letter:' .. ARGV[1] .. '/' .. id
dlq_index_add(KEYS[10], KEYS[8], KEYS[9], id)
redis.call('SET', KEYS[1], marker)
redis.call('HDEL', KEYS[4], ARGV[6])
redis.call('HDEL', KEYS[7], ARGV[6])
redis.call('ZREM', KEYS[5], ARGV[6])
redis.call('ZREM', KEYS[6], ARGV[6])
local trimmed = redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[3])
local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local t = redis.call('TIME')
  local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - max_age
  trimmed = trimmed + redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', min_ms))
end
if trimmed > 0 then
  dlq_index_trim(KEYS[2], KEYS[10])
end
return {1, marker, trimmed}
