-- A person (or the API) asks to compensate the saga.
-- ARGV[1] message, ARGV[2] expected version ("" = any), ARGV[3] actor (who asked; "" = the
-- engine itself)
-- RUNNING: compensate. A step between attempts, or waiting for its reply event, is settled
-- at once (FAILED; a waiting step's command is out, so it counts as uncertain). A step whose
-- attempt is in flight is fenced off: the saga is COMPENSATING at once, and whoever sees the
-- attempt end starts the compensation ({"deferred"}), so that nothing is undone before it is
-- done. COMPLETED: undo everything. COMPENSATION_FAILED: retry the compensations left.
-- PENDING: cancel (all SKIPPED, COMPENSATED).
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
    mark_failed(j, now, '1', 'compensation requested while waiting')
    j = nil
  elseif j ~= nil and not attempt_open(j) then
    mark_failed(j, now, sget(j, 'unc'), 'compensation requested between attempts: '
      .. (sget(j, 'err') or ''))
    j = nil
  end
  if j ~= nil then return fence(j, now, 'compensation_requested', ARGV[1], ARGV[3]) end
elseif status == 'COMPLETED' then
  redis.call('HSET', SAGA, 'failure', failure_json(nil, 'manual', ARGV[1]), 'finished', '')
  redis.call('ZREM', KEYS[11], saga_id())
end
commit(now, 'compensation_requested', nil, ARGV[1], ARGV[3])
return reply_with('compensate', start_compensation(now))
