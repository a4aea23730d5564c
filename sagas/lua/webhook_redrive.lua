-- The sweep: outbox entries due by now (their claim or retry countdown passed with no
-- result: a killed worker, a lost message) are taken for sending again: each is due again
-- one lease later, so that the next sweep does not send it twice meanwhile.
-- KEYS[1] <prefix>webhooks:due; ARGV[1] at most this many, ARGV[2] lease ms
-- Returns the ids.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return ids
