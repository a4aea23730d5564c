-- Record a failed attempt that will be retried; the step stays RUNNING.
-- ARGV[1] step index, ARGV[2] lease, ARGV[3] attempt, ARGV[4] error, ARGV[5] uncertain "1"/"0",
-- ARGV[6] countdown ms (the sweep re-drives the step if no attempt begins by then + grace)
-- Returns {"ok"}; {"compensate", i...} when the saga is being compensated (the attempt has
-- ended, so the step is settled here, FAILED, and the undo can start); or {"stale"} when
-- this attempt no longer holds the step.
local i = tonumber(ARGV[1])
if sget(i, 'st') ~= 'RUNNING' or sget(i, 'lease') ~= ARGV[2]
   or sget(i, 'att') ~= ARGV[3] then return {'stale'} end
local now = now_ms()
local repeated = sget(i, 'fatt') == ARGV[3]
if ARGV[5] == '1' then sset(i, 'unc', '1') end
sset(i, 'err', ARGV[4], 'fatt', ARGV[3])
if get('status') ~= 'RUNNING' then return fail_step(i, now, sget(i, 'unc'), 'error', ARGV[4]) end
if repeated then return {'ok'} end
stat('steps|retried')
set_step_timer('step', i, math.min(tonumber(sget(i, 'dl')), now + tonumber(ARGV[6]) + REDRIVE_MS))
commit(now, 'step_retry', i, ARGV[4])
return {'ok'}
