-- redrive_created: the redriven Job exists; record its uid on the redrive record.
-- KEYS[1] the entry's redrive record   ARGV[1] the Job's uid
-- -> 1 recorded (or already this uid) | 0 the record is gone (the daemon settled it already)
--    | -1 the record holds another uid: nothing changed
-- A script, not HSET: HSET on a settled (deleted) record would bring back half a record.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local uid = redis.call('HGET', KEYS[1], 'uid')
if uid and uid ~= '' and uid ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'uid', ARGV[1])
return 1
