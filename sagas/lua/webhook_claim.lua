-- An execution claims outbox entry KEYS[1] to send it (sagas/webhooks.py).
-- KEYS[1] <prefix>webhook:<id>, KEYS[2] <prefix>webhooks:due
-- ARGV[1] the execution's token (its Celery task id: a redelivery of the same task takes its
-- own claim over), ARGV[2] the claim's lease ms (the attempt's hard time limit), ARGV[3] id
-- Returns {"send", attempt, field, value, ...} (the entry, its attempt counted; it is due
-- again when the lease ends, so a killed execution's send is re-driven by the sweep),
-- {"busy"} (another live execution holds it) or {"gone"} (delivered, or a dead letter).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'state', 'claim', 'until')
if f[1] ~= 'pending' then
  if not f[1] then redis.call('ZREM', KEYS[2], ARGV[3]) end
  return {'gone'}
end
if f[2] and f[2] ~= '' and f[2] ~= ARGV[1] and tonumber(f[3] or '0') > now then
  return {'busy'}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local lease_end = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'claim', ARGV[1], 'until', lease_end)
redis.call('ZADD', KEYS[2], lease_end, ARGV[3])
local reply = {'send', attempt}
local all = redis.call('HGETALL', KEYS[1])
for k = 1, #all do reply[#reply + 1] = all[k] end
return reply
