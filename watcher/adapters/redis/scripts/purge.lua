-- purge: delete dead letters from one queue's stream and from its indexes, entry by entry.
-- KEYS[1] dlq stream   KEYS[2] index registry of the queue (dlq_index.lua)
-- ARGV[1..n] stream ids
-- -> {deleted, missing}: ids deleted now, ids that were not there (purged before, trimmed)
-- Called unfenced by the CLI (it is not a leader); fenced like every write script so a
-- leader's fence is never bypassed by a new write path. Outcome markers are left alone on
-- purpose: a purged Job that is replayed (a relist) is not dead-lettered a second time.
local deleted, missing = 0, 0
for _, id in ipairs(ARGV) do
  if redis.call('XDEL', KEYS[1], id) == 1 then
    deleted = deleted + 1
  else
    missing = missing + 1
  end
  dlq_index_remove(KEYS[2], id)
end
return {deleted, missing}
