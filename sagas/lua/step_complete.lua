-- Record a step's success.
-- ARGV[1] step index, ARGV[2] lease, ARGV[3] attempt, ARGV[4] output JSON; the call's id
-- is CALL (lib.lua)
-- (unique per call: a resend of the same call, after a lost reply, gets the first answer;
-- a second delivery of the result is a duplicate)
-- Returns {"next"} (the chain continues), {"saga_completed"}, {"compensate", i...} (the saga
-- was set compensating while the step ran: undo these, newest first), {"duplicate"} (another
-- execution recorded it: stop), or {"stale", status} (this execution no longer holds the step,
-- e.g. the step already failed on its deadline: the late result is refused).
local i = tonumber(ARGV[1])
local st = sget(i, 'st')
local status = get('status')
if st == 'COMPLETED' then
  if sget(i, 'cid') == CALL then
    if status == 'RUNNING' then return {'next'} end
    if status == 'COMPLETED' and i == tonumber(get('n')) - 1 then return {'saga_completed'} end
  end
  return {'duplicate'}
end
if st ~= 'RUNNING' or sget(i, 'lease') ~= ARGV[2] or sget(i, 'att') ~= ARGV[3] then
  return {'stale', st or ''}
end
local now = now_ms()
sset(i, 'st', 'COMPLETED', 'out', ARGV[4], 't1', now, 'err', '', 'unc', '0', 'cid', CALL)
clear_step_timer('step', i)
stat('steps|completed')
local n = tonumber(get('n'))
if status == 'RUNNING' then
  if i == n - 1 then
    redis.call('HSET', SAGA, 'cur', -1)
    finish(now, 'COMPLETED')
    commit(now, 'saga_completed', i)
    return {'saga_completed'}
  end
  set_timer('next', now + REDRIVE_MS)
  commit(now, 'step_completed', i)
  return {'next'}
end
commit(now, 'step_completed', i)
return reply_with('compensate', start_compensation(now))
