-- dlq_index: the per-queue secondary indexes of dead letters, kept in the writing script.
-- scripts.py puts this before the scripts that add or remove stream entries (dead_letter,
-- abandon_retry, purge), so an entry and its index members change in one atomic step.
-- Each index is a zset of stream ids scored by the id's ms part; the queue's registry set
-- names every index zset, so a trim or a purge finds them all without a scan. The index keys
-- share the installation's hash tag: on Redis Cluster they are in the slot of the stream.
local function dlq_id_ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- a < b for stream ids '<ms>-<seq>' (as numbers: '9-0' < '10-0', unlike the strings)
local function dlq_id_less(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if ams == nil or bms == nil then
    return a < b
  end
  if tonumber(ams) ~= tonumber(bms) then
    return tonumber(ams) < tonumber(bms)
  end
  return tonumber(aseq) < tonumber(bseq)
end

-- index a new entry `id` in `class_key` and `ns_key`, named in `registry`
local function dlq_index_add(registry, class_key, ns_key, id)
  local score = dlq_id_ms(id)
  redis.call('ZADD', class_key, score, id)
  redis.call('ZADD', ns_key, score, id)
  redis.call('SADD', registry, class_key, ns_key)
end

-- after a trim of `stream`: drop from every index of `registry` the ids below the stream's
-- first entry (XTRIM only ever removes from the start), and forget indexes left empty.
local function dlq_index_trim(stream, registry)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  for _, key in ipairs(redis.call('SMEMBERS', registry)) do
    if #first == 0 then
      redis.call('DEL', key)
    else
      local first_id = first[1][1]
      local first_ms = dlq_id_ms(first_id)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.0f', first_ms))
      local same = redis.call('ZRANGEBYSCORE', key, first_ms, first_ms)
      for _, member in ipairs(same) do
        if dlq_id_less(member, first_id) then
          redis.call('ZREM', key, member)
        end
      end
    end
    if redis.call('EXISTS', key) == 0 then
      redis.call('SREM', registry, key)
    end
  end
end

-- remove `id` (deleted from the stream) from every index of `registry`
local function dlq_index_remove(registry, id)
  for _, key in ipairs(redis.call('SMEMBERS', registry)) do
    redis.call('ZREM', key, id)
    if redis.call('EXISTS', key) == 0 then
      redis.call('SREM', registry, key)
    end
  end
end
