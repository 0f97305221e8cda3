-- redrive_failed: a redriven Job failed; its record goes and its new dead letter is written,
-- in one step. The body of dead_letter.lua follows this prefix (scripts are concatenated, see
-- watcher/adapters/redis/redrive.py), so the write is exactly the usual one.
-- KEYS[1..8] as dead_letter.lua   KEYS[9] the redrive record   KEYS[10] redriving zset
-- ARGV[1..6] as dead_letter.lua   ARGV[7] entry id "<queue>/<stream-id>"   ARGV[8] Job uid
-- -> dead_letter.lua's reply | {-1, '', 0} no record, or it names another Job: nothing written
-- With the Job's outcome marker already set (a replay after the write) nothing is checked
-- here: dead_letter.lua answers "already handled".
if not redis.call('GET', KEYS[1]) then
  if redis.call('EXISTS', KEYS[9]) == 0 then
    return {-1, '', 0}
  end
  local uid = redis.call('HGET', KEYS[9], 'uid')
  if uid and uid ~= '' and uid ~= ARGV[8] then
    return {-1, '', 0}
  end
  redis.call('DEL', KEYS[9])
  -- pcall: a hand-written key of another type must not stop the entry's write below
  redis.pcall('ZREM', KEYS[10], ARGV[7])
end
