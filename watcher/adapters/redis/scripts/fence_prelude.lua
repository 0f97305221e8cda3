-- fence prelude: scripts.py puts this before the body of every write script.
-- The caller (RedisStore._script) appends the leader fence key to KEYS and a leadership term
-- to ARGV; both are removed here, so the body sees exactly the KEYS and ARGV it documents.
-- term '' = unfenced (leader election off, `kube-dlq sweep`): no check, the fence untouched.
-- term < fence  -> error 'KUBEDLQ_FENCED <fence>' before anything is written;
-- term >= fence -> the fence becomes term (raised by the first write after a Redis that lost
--                  it, too), then the body runs.
-- A fence that is not a whole number in [0, 2^53) -> error 'KUBEDLQ_BAD_FENCE': nothing is
-- written until an operator deletes the key (the next leader's first write sets it again).
do
  local fence_key = table.remove(KEYS)
  local term = table.remove(ARGV)
  if term ~= '' then
    term = tonumber(term)
    local raw = redis.call('GET', fence_key)
    local fence = -1
    if raw then
      fence = tonumber(raw)
      if fence == nil or fence ~= math.floor(fence) or fence < 0 or fence >= 2 ^ 53 then
        return redis.error_reply('KUBEDLQ_BAD_FENCE ' .. string.sub(raw, 1, 40))
      end
    end
    if term < fence then
      return redis.error_reply('KUBEDLQ_FENCED ' .. raw)
    end
    if term > fence then
      redis.call('SET', fence_key, term)
    end
  end
end
