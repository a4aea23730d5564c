-- Step i's compensation cannot be done: the saga becomes COMPENSATION_FAILED for a person.
-- Compensations not yet run stay PENDING (visible), and a retry of the compensation resumes
-- with this one: undoing an earlier step while a later one is still in effect is not safe.
-- ARGV[1] step index, ARGV[2] lease ("" = any), ARGV[3] error
-- Returns {"failed"} or {"duplicate"}.
local i = tonumber(ARGV[1])
local cst = sget(i, 'cst')
if cst ~= 'COMPENSATING' and cst ~= 'PENDING' then return {'duplicate'} end
if ARGV[2] ~= '' and cst == 'COMPENSATING' and sget(i, 'clease') ~= ARGV[2] then
  return {'duplicate'}
end
if get('status') ~= 'COMPENSATING' then return {'duplicate'} end
local now = now_ms()
sset(i, 'cst', 'COMPENSATION_FAILED', 'st', 'COMPENSATION_FAILED', 'cerr', ARGV[3])
stat('compensations|failed')
redis.call('HSET', SAGA, 'cfailure', failure_json(i, 'error', ARGV[3]))
set_status('COMPENSATION_FAILED')
clear_timers(tonumber(get('n')))
count_final(now, 'COMPENSATION_FAILED')
commit(now, 'compensation_failed', i, ARGV[3])
return {'failed'}
