-- A person sends a dead letter again (POST /webhooks/dead-letters/{id}/retry): it is pending
-- again with a fresh retry window (SAGA_WEBHOOK_MAX_SECONDS from now), same id, same body.
-- KEYS[1] <prefix>webhook:<id>, KEYS[2] webhooks:due, KEYS[3] webhooks:dead
-- ARGV[1] actor (the API key's name), ARGV[2] lease ms (due then if its send is lost)
-- Returns {"retried"}, {"missing"} or {"conflict", state}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'id', 'state')
if not f[1] then return {'missing'} end
if f[2] ~= 'dead' then return {'conflict', f[2]} end
redis.call('HSET', KEYS[1], 'state', 'pending', 'since', now, 'claim', '', 'until', 0,
  'retried_by', ARGV[1], 'retried_at', now, 'dead_at', '')
redis.call('HINCRBY', KEYS[1], 'retries', 1)
redis.call('ZREM', KEYS[3], f[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), f[1])
return {'retried'}
