-- Delete a finished saga with its history and every index entry.
-- KEYS: common 1..11 (lib.lua), KEYS[12] idx:all, KEYS[13] idx:type:<type>,
--       KEYS[14] idx:corr:<correlation id>
-- Returns {"deleted"}, {"missing"} or {"conflict", status} for a saga not COMPLETED or
-- COMPENSATED (deleting it would lose the record of work not undone).
local status = get('status')
if not status then return {'missing'} end
if status ~= 'COMPLETED' and status ~= 'COMPENSATED' then return {'conflict', status} end
local id = saga_id()
clear_timers(tonumber(get('n')))
redis.call('ZREM', KEYS[STATUS_INDEX[status]], id)
for k = 11, 14 do redis.call('ZREM', KEYS[k], id) end
redis.call('DEL', SAGA, KEYS[2])
stat('deleted')
return {'deleted'}
