-- One page of saga ids from the indexes, newest first, and the total that match.
-- KEYS[1..n] the index sorted sets to intersect (scored by creation epoch ms; one key = no
-- intersection), KEYS[n+1] a scratch key for the intersection (deleted before returning)
-- ARGV[1] min created (epoch ms or "-inf"), ARGV[2] max created (or "+inf"),
-- ARGV[3] offset, ARGV[4] count
-- Returns {total, {id, ...}}.
local n = #KEYS - 1
local source = KEYS[1]
if n > 1 then
  local args = {'ZINTERSTORE', KEYS[n + 1], n}
  for k = 1, n do args[#args + 1] = KEYS[k] end
  args[#args + 1] = 'WEIGHTS'
  for k = 1, n do args[#args + 1] = (k == 1) and 1 or 0 end
  redis.call(unpack(args))
  source = KEYS[n + 1]
end
local total = redis.call('ZCOUNT', source, ARGV[1], ARGV[2])
local ids = redis.call('ZREVRANGEBYSCORE', source, ARGV[2], ARGV[1], 'LIMIT', ARGV[3], ARGV[4])
if n > 1 then redis.call('DEL', KEYS[n + 1]) end
return {total, ids}
