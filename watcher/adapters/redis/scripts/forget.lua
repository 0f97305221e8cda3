-- forget: let the outcome markers of Jobs gone from the API expire.
-- KEYS[1] marker index zset   KEYS[2] retry tickets hash   KEYS[3..n] outcome markers
-- ARGV[1] written-up-to sequence   ARGV[2] ttl ms   ARGV[3..] for each marker KEYS[i], i >= 3:
-- its index member at ARGV[2i - 3] and its job uid (= ticket id) at ARGV[2i - 2]
-- The caller passes markers indexed at or below ARGV[1] whose Job a complete list of Jobs,
-- begun after the sequence was read, did not show. Each one still so indexed, and without a
-- pending retry ticket, leaves the index and expires in ARGV[2] ms; one with a pending ticket
-- stays as it is (after the ticket is acked, a later pass forgets it).
-- -> {forgotten, kept for a pending retry}
local up_to = tonumber(ARGV[1])
local forgotten, pending = 0, 0
for i = 3, #KEYS do
  local member, uid = ARGV[2 * i - 3], ARGV[2 * i - 2]
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score and tonumber(score) <= up_to then
    if redis.call('HEXISTS', KEYS[2], uid) == 1 then
      pending = pending + 1
    else
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
      redis.call('ZREM', KEYS[1], member)
      forgotten = forgotten + 1
    end
  end
end
return {forgotten, pending}
