-- redrive_release: put a claimed entry back on its queue when its Job was surely not created.
-- KEYS[1] dlq stream   KEYS[2] queues set   KEYS[3] class index   KEYS[4] namespace index
-- KEYS[5] index registry of the queue   KEYS[6] redriving zset   KEYS[7] the redrive record
-- ARGV[1] entry id "<queue>/<stream-id>"   ARGV[2] queue   ARGV[3] stream field
-- -> {1, new stream id} back on the queue (a new id: a stream only grows at its end)
--    | {0, ''} kept: no record, a uid is recorded, or it was begun more than once (an earlier
--      POST, whose answer was lost, may have created the Job: the next run finds it)
local begins = tonumber(redis.call('HGET', KEYS[7], 'begins') or '0') or 0
local uid = redis.call('HGET', KEYS[7], 'uid')
local data = redis.call('HGET', KEYS[7], 'entry')
if begins ~= 1 or (uid and uid ~= '') or not data then
  return {0, ''}
end
redis.call('SADD', KEYS[2], ARGV[2])
local id = redis.call('XADD', KEYS[1], '*', ARGV[3], data)
dlq_index_add(KEYS[5], KEYS[3], KEYS[4], id)
redis.call('DEL', KEYS[7])
redis.call('ZREM', KEYS[6], ARGV[1])
return {1, id}
