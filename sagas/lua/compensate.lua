-- A person (or the API) asks to compensate the saga.
-- ARGV[1] message, ARGV[2] expected version ("" = any)
-- RUNNING: compensate; if a step is in flight, fence it off and let whoever settles it
-- start the compensation ({"deferred"}). COMPLETED: undo everything. COMPENSATION_FAILED:
-- retry the compensations left. PENDING: cancel (all SKIPPED, COMPENSATED).
-- Returns {"compensate", i...}, {"deferred"}, {"missing"} or {"conflict", status}.
local status = get('status')
if not status then return {'missing'} end
if ARGV[2] ~= '' and get('ver') ~= ARGV[2] then return {'conflict', status, 'version'} end
if status == 'COMPENSATING' or status == 'COMPENSATED' then return {'conflict', status} end
local now = now_ms()
local n = tonumber(get('n'))
if status == 'RUNNING' or status == 'PENDING' then
  local j = in_flight(n)
  redis.call('HSET', SAGA, 'failure', failure_json(j, 'manual', ARGV[1]))
  if j ~= nil and sget(j, 'st') == 'WAITING' then
    -- Nobody else would settle a waiting step: fence it off now (its command is out, so it
    -- counts as uncertain) and compensate; its reply, if it comes, is refused.
    sset(j, 'st', 'FAILED', 'unc', '1', 't1', now, 'err', 'compensation requested while waiting')
    clear_step_timer('step', j)
    stat('steps|failed')
    j = nil
  end
  if j ~= nil then
    set_status('COMPENSATING')
    clear_timer('saga')
    clear_timer('next')
    commit(now, 'compensation_requested', j, ARGV[1])
    return {'deferred'}
  end
elseif status == 'COMPLETED' then
  redis.call('HSET', SAGA, 'failure', failure_json(nil, 'manual', ARGV[1]), 'finished', '')
  redis.call('ZREM', KEYS[11], saga_id())
end
commit(now, 'compensation_requested', nil, ARGV[1])
return reply_with('compensate', start_compensation(now))
