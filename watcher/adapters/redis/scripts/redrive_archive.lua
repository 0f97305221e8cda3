-- redrive_archive: a redriven Job succeeded; its entry moves to the queue's archive stream.
-- KEYS[1] the redrive record   KEYS[2] redriving zset   KEYS[3] archive stream of the queue
-- ARGV[1] entry id "<queue>/<stream-id>"   ARGV[2] the Job's uid
-- ARGV[3] the Job "<namespace>/<name>/<uid>"   ARGV[4] archive maxlen   ARGV[5] stream field
-- -> {1, archive id} archived now | {0, ''} no record (settled before: a replay)
--    | {-1, ''} the record names another Job (its uid): nothing changed
-- The caller checked the Job's namespace, name and token against the record's sealed plan;
-- the uid is checked here, where it cannot change under the check.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local uid = redis.call('HGET', KEYS[1], 'uid')
if uid and uid ~= '' and uid ~= ARGV[2] then
  return {-1, ''}
end
local data = redis.call('HGET', KEYS[1], 'entry') or ''
local id = redis.call('XADD', KEYS[3], '*', ARGV[5], data, 'of', ARGV[1], 'job', ARGV[3])
redis.call('XTRIM', KEYS[3], 'MAXLEN', '~', ARGV[4])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return {1, id}
