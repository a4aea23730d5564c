-- Workers whose last heartbeat is younger than ARGV[1] ms, by Redis's clock.
-- KEYS[1] workers sorted set
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
