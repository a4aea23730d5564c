-- A worker says it is alive; entries older than a day are dropped.
-- KEYS[1] workers sorted set (member = worker hostname, score = last beat epoch ms)
-- ARGV[1] hostname
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
return now
