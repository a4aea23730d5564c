-- Delete a finished saga with its history and every index entry.
-- KEYS: common 1..11 (lib.lua), KEYS[12] idx:all, KEYS[13] idx:type:<type>,
--       KEYS[14] idx:corr:<correlation id>, KEYS[15] def:<digest>, KEYS[16] defs,
--       KEYS[17] the Idempotency-Key that created the saga (field idk; a scratch key if none):
--       released with the saga, so that the key starts a new saga rather than pointing at none
-- Returns {"deleted"}, {"missing"} or {"conflict", status} for a saga not COMPLETED or
-- COMPENSATED (deleting it would lose the record of work not undone).
local status = get('status')
if not status then return {'missing'} end
if status ~= 'COMPLETED' and status ~= 'COMPENSATED' then return {'conflict', status} end
local id = saga_id()
clear_timers(tonumber(get('n')))
redis.call('ZREM', KEYS[STATUS_INDEX[status]], id)
redis.call('ZREM', type_status_key(status), id)
for k = 11, 14 do redis.call('ZREM', KEYS[k], id) end
-- The definition goes with its last saga.
local digest = get('def')
if redis.call('HINCRBY', KEYS[16], digest, -1) <= 0 then
  redis.call('HDEL', KEYS[16], digest)
  redis.call('DEL', KEYS[15])
end
if redis.call('HGET', KEYS[17], 'saga') == id then redis.call('DEL', KEYS[17]) end
redis.call('DEL', SAGA, KEYS[2])
stat('deleted')
return {'deleted'}
