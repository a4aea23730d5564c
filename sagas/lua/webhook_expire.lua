-- The sweep: dead letters older than SAGA_RETENTION_SECONDS are deleted (one that a person
-- retried meanwhile is no longer in the dead set, so it stays).
-- KEYS[1] <prefix>webhooks:dead; ARGV[1] horizon epoch ms, ARGV[2] at most this many,
-- ARGV[3] the entries' key prefix (<prefix>webhook:)
-- Returns how many were deleted.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[3] .. id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
