-- Register a workflow version (sagas/catalog.py). Versions are immutable: a new content is
-- a new version, the same content as the latest a no-op.
-- KEYS[1] wf:<name> (hash: latest, digest, retired, created, updated; per version n:
--         v:<n> content JSON, d:<n> digest, at:<n> epoch ms, src:<n> where it came from)
-- KEYS[2] workflows (set of names)
-- ARGV[1] name, ARGV[2] digest, ARGV[3] content JSON, ARGV[4] "1": a retired workflow is
-- brought back (PUT), "0": left retired (a file loaded at start-up), ARGV[5] source.
-- Returns {"created", n}, {"same", n} (nothing written), {"revived", n} (same content,
-- retired no more) or {"retired", n} (nothing written: retired, and ARGV[4] is "0").
local cur = redis.call('HMGET', KEYS[1], 'latest', 'digest', 'retired')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local latest = tonumber(cur[1])
local retired = cur[3] == '1'
if latest and retired and ARGV[4] ~= '1' then return {'retired', latest} end
if latest and cur[2] == ARGV[2] then
  if retired then
    redis.call('HSET', KEYS[1], 'retired', '0', 'updated', now)
    return {'revived', latest}
  end
  return {'same', latest}
end
local v = (latest or 0) + 1
redis.call('HSET', KEYS[1], 'latest', v, 'digest', ARGV[2], 'retired', '0', 'updated', now,
  'v:' .. v, ARGV[3], 'd:' .. v, ARGV[2], 'at:' .. v, now, 'src:' .. v, ARGV[5])
if v == 1 then redis.call('HSET', KEYS[1], 'created', now) end
redis.call('SADD', KEYS[2], ARGV[1])
return {'created', v}
