-- redrive_claim: move a dead letter off its queue into a redriving record, in one step.
-- KEYS[1] dlq stream   KEYS[2] index registry of the queue (dlq_index.lua)
-- KEYS[3] redriving zset   KEYS[4] the entry's redrive record (hash)
-- ARGV[1] stream id   ARGV[2] entry id "<queue>/<stream-id>"   ARGV[3] sealed plan
-- ARGV[4] stream field
-- -> {1, plan, 1} claimed now: the entry left the stream and every index of its queue
--    | {2, plan, begins} claimed before (an interrupted run, another operator): the record's
--      own plan, never ARGV[3]; `begins` counts the calls, so a release knows whether an
--      earlier POST may have happened
--    | {0, '', 0} neither queued nor being redriven (settled, purged, trimmed)
--    | {-1, '', 0} the stream entry has no data field: nothing to redrive
-- The record keeps the stored entry byte for byte (still sealed for its queue's stream) until
-- the daemon settles the redriven Job: archived on success, back on the queue on failure.
if redis.call('EXISTS', KEYS[4]) == 1 then
  local begins = redis.call('HINCRBY', KEYS[4], 'begins', 1)
  return {2, redis.call('HGET', KEYS[4], 'plan') or '', begins}
end
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
if #found == 0 then
  return {0, '', 0}
end
local fields = found[1][2]
local data = nil
for i = 1, #fields - 1, 2 do
  if fields[i] == ARGV[4] then
    data = fields[i + 1]
  end
end
if data == nil then
  return {-1, '', 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[4], 'entry', data, 'plan', ARGV[3], 'begins', 1, 'claimed_ms', now)
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
dlq_index_remove(KEYS[2], ARGV[1])
return {1, ARGV[3], 1}
