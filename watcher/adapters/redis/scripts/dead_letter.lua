-- dead_letter: append a dead letter to its queue's stream unless the job uid was handled.
-- KEYS[1] outcome marker   KEYS[2] dlq stream   KEYS[3] queues set
-- ARGV[1] queue  ARGV[2] payload  ARGV[3] marker ttl ms  ARGV[4] maxlen  ARGV[5] max age ms
-- (0 = no age trim)  ARGV[6] stream field
-- -> {1, marker, trimmed} written now; trimmed = entries the caps removed from the stream
--    | {0, marker, 0} job uid already handled (nothing written)
-- The entry is added, then trimmed with XTRIM rather than XADD MAXLEN: the same approximate
-- (~, whole stream nodes) trim, but XTRIM answers how many entries it removed, exactly.
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing, 0}
end
redis.call('SADD', KEYS[3], ARGV[1])
local id = redis.call('XADD', KEYS[2], '*', ARGV[6], ARGV[2])
local marker = 'dead_letter:' .. ARGV[1] .. '/' .. id
redis.call('SET', KEYS[1], marker, 'PX', ARGV[3])
local trimmed = redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[4])
local max_age = tonumber(ARGV[5])
if max_age > 0 then
  local t = redis.call('TIME')
  local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - max_age
  trimmed = trimmed + redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', min_ms))
end
return {1, marker, trimmed}
