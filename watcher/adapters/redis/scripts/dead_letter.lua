-- dead_letter: append a dead letter to its queue's stream unless the job uid was handled.
-- KEYS[1] outcome marker   KEYS[2] dlq stream   KEYS[3] queues set   KEYS[4] marker index zset
-- KEYS[5] marker sequence   KEYS[6] class index   KEYS[7] namespace index
-- KEYS[8] index registry of the queue (dlq_index.lua)
-- ARGV[1] queue  ARGV[2] payload  ARGV[3] maxlen  ARGV[4] max age ms (0 = no age trim)
-- ARGV[5] stream field  ARGV[6] index member "<namespace>/<job uid>"
-- -> {1, marker, trimmed} written now; trimmed = entries the caps removed from the stream
--    | {0, marker, 0} job uid already handled (nothing written)
-- The marker has no TTL and is indexed with the next sequence number: it is kept until a
-- complete list of Jobs shows the Job gone from the API (forget.lua). A marker found with a
-- TTL (written by a version whose markers expired, or forgotten since) is seen again, so its
-- Job may still be in the API: it is kept for good again, and indexed.
-- The entry is added, then trimmed with XTRIM rather than XADD MAXLEN: the same approximate
-- (~, whole stream nodes) trim, but XTRIM answers how many entries it removed, exactly.
-- The indexes get the new id, and lose every id a trim removed, in this same step.
local existing = redis.call('GET', KEYS[1])
if existing then
  if redis.call('PTTL', KEYS[1]) > 0 then
    redis.call('PERSIST', KEYS[1])
    redis.call('ZADD', KEYS[4], 'NX', redis.call('INCR', KEYS[5]), ARGV[6])
  end
  return {0, existing, 0}
end
local seq = redis.call('INCR', KEYS[5])
redis.call('SADD', KEYS[3], ARGV[1])
local id = redis.call('XADD', KEYS[2], '*', ARGV[5], ARGV[2])
local marker = 'dead_letter:' .. ARGV[1] .. '/' .. id
redis.call('SET', KEYS[1], marker)
redis.call('ZADD', KEYS[4], seq, ARGV[6])
dlq_index_add(KEYS[8], KEYS[6], KEYS[7], id)
local trimmed = redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[3])
local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local t = redis.call('TIME')
  local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - max_age
  trimmed = trimmed + redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', min_ms))
end
if trimmed > 0 then
  dlq_index_trim(KEYS[2], KEYS[8])
end
return {1, marker, trimmed}
