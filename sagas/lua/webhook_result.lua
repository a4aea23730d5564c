-- Record the outcome of a delivery attempt (sagas/webhooks.py).
-- KEYS[1] <prefix>webhook:<id>, KEYS[2] webhooks:due, KEYS[3] webhooks:dead, KEYS[4] stats
-- ARGV[1] the execution's token, ARGV[2] "delivered" or "failed", ARGV[3] error,
-- ARGV[4] HTTP status ("" = no answer), ARGV[5] backoff ms before the next attempt,
-- ARGV[6] SAGA_WEBHOOK_MAX_SECONDS in ms, ARGV[7] grace ms (the sweep re-drives an entry
-- whose countdown passed by that much without an attempt)
-- Returns {"delivered"} (entry deleted), {"retry"} (due after the backoff), {"dead"} (the
-- retry window is over: a dead letter), {"stale"} (another execution holds the claim now)
-- or {"gone"}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'claim', 'since')
if not f[1] then return {'gone'} end
local id = f[1]
if ARGV[2] == 'delivered' then
  -- A success counts whoever sent it: the receiver has the message.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('HINCRBY', KEYS[4], 'webhooks|delivered', 1)
  return {'delivered'}
end
if f[2] ~= 'pending' or f[3] ~= ARGV[1] then return {'stale'} end
redis.call('HINCRBY', KEYS[4], 'webhooks|failed', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[3], 'last_code', ARGV[4], 'last_at', now,
  'claim', '', 'until', 0)
local next_at = now + tonumber(ARGV[5])
if next_at - tonumber(f[4]) > tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'state', 'dead', 'dead_at', now)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('HINCRBY', KEYS[4], 'webhooks|dead', 1)
  return {'dead'}
end
redis.call('HSET', KEYS[1], 'next_at', next_at)
redis.call('ZADD', KEYS[2], next_at + tonumber(ARGV[7]), id)
return {'retry'}
