-- Create a saga in RUNNING with every step PENDING.
-- KEYS: common 1..11 (lib.lua), KEYS[12] idx:all, KEYS[13] idx:type:<type>,
--       KEYS[14] idx:corr:<correlation id>
-- ARGV[1] saga id, ARGV[2] type, ARGV[3] correlation id, ARGV[4] payload JSON,
-- ARGV[5] definition JSON, ARGV[6] saga timeout ms, then per step 4 values:
-- name, has compensation ("1"/"0"), step timeout ms, max attempts.
-- Returns {"created", version} or {"exists", version} (a repeat of the same call is harmless).
if redis.call('EXISTS', SAGA) == 1 then return {'exists', tonumber(get('ver'))} end
local now = now_ms()
local n = (#ARGV - 6) / 4
redis.call('HSET', SAGA, 'id', ARGV[1], 'type', ARGV[2], 'corr', ARGV[3], 'payload', ARGV[4],
  'def', ARGV[5], 'n', n, 'created', now, 'updated', now, 'deadline', now + tonumber(ARGV[6]),
  'finished', '', 'failure', '', 'cfailure', '', 'cur', -1, 'ver', 0)
for j = 0, n - 1 do
  local base = 6 + j * 4
  sset(j, 'name', ARGV[base + 1], 'st', 'PENDING', 'att', 0, 'hc', ARGV[base + 2],
    'to', ARGV[base + 3], 'ma', ARGV[base + 4])
  if ARGV[base + 2] == '1' then sset(j, 'cst', 'PENDING', 'catt', 0) end
end
set_status('RUNNING')
redis.call('ZADD', KEYS[12], now, ARGV[1])
redis.call('ZADD', KEYS[13], now, ARGV[1])
redis.call('ZADD', KEYS[14], now, ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), 'saga|' .. ARGV[1])
stat('started|' .. ARGV[2])
return {'created', commit(now, 'created')}
