-- begin_create: record, before the POST, that this claim is about to create the ticket's Job.
-- KEYS[1] tickets hash   KEYS[2] claims hash   KEYS[3] the ticket's create record (hash)
-- ARGV[1] ticket id  ARGV[2] claim number  ARGV[3] namespace  ARGV[4] Job name
-- ARGV[5] a new random token (kept only if the record has none yet)  ARGV[6] lineage body
-- ARGV[7] record ttl ms
-- -> {1, token, other claims that began before, name they last used}
--    | {0, '', 0, ''} the ticket is settled: create nothing
--    | {-1, '', 0, ''} another replica claimed the ticket since (its claim owns it): create nothing
-- The record is the proof a second holder needs: a create may already have happened, and the
-- token (on the Job as kube-dlq.io/create-token) tells this ticket's Job from anyone else's.
-- `begins` counts distinct claims that began a create; the settle script delays the finalizer
-- removal when it is above 1 (an earlier POST may still be in flight). The record is also the
-- lineage of the Job it creates (namespace, name, lineage, then its uid on settling).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {0, '', 0, ''}
end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return {-1, '', 0, ''}
end
local token = redis.call('HGET', KEYS[3], 'token')
if not token then
  token = ARGV[5]
  redis.call('HSET', KEYS[3], 'token', token)
end
local last_claim = redis.call('HGET', KEYS[3], 'claim')
-- `or 0`: a field that is not a number (written by hand) must not fail the script
local before = tonumber(redis.call('HGET', KEYS[3], 'begins') or '0') or 0
local last_name = redis.call('HGET', KEYS[3], 'name') or ''
if last_claim ~= ARGV[2] then
  redis.call('HSET', KEYS[3], 'begins', before + 1, 'claim', ARGV[2])
else
  before = before - 1  -- this claim began before (its first name was taken): not another one
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[3], 'namespace', ARGV[3], 'name', ARGV[4], 'last_ms', now,
           'lineage', ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
return {1, token, before, last_name}
