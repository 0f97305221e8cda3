-- claim_term: a new leader takes its term, which must be above every term used before.
-- (Not wrapped in the fence prelude: this is the fence's own write.)
-- KEYS[1] leader fence   ARGV[1] term
-- -> {1, term} claimed: the fence is now term | {0, fence} the fence is at or above term
--    (the caller must take a higher term and claim again)
-- Strictly above: two leaders that computed the same term (a Lease edited or re-created by
-- hand) must not both be allowed to write.
local raw = redis.call('GET', KEYS[1])
if raw then
  local fence = tonumber(raw)
  if fence == nil or fence ~= math.floor(fence) or fence < 0 or fence >= 2 ^ 53 then
    return redis.error_reply('KUBEDLQ_BAD_FENCE ' .. string.sub(raw, 1, 40))
  end
  if fence >= tonumber(ARGV[1]) then
    return {0, raw}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, ARGV[1]}
