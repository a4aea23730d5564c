-- An execution of step i wants to make an attempt.
-- ARGV[1] step index, ARGV[2] lease (the Celery task id), ARGV[3] the execution's bound in ms
-- (its Celery hard time limit: by now + this it has provably ended). The call's id (CALL,
-- lib.lua) also fences the attempt: the same id again = the same call: its reply was lost, or the execution carried it over a
-- retry without having called anything; it gets the same attempt, not a new one)
-- Returns one of:
--   {"run", attempt, remaining ms, payload, def, corr, type, tp, out0..out(i-1)}  go ahead
--   {"resume"}    the step already completed and the next one has not started: the chain
--                 continues without a call (a redelivery after the result was committed)
--   {"compensate", i...}  the step ended here, FAILED: its deadline passed, no attempts are
--                 left, or the saga is compensating (a fence) and this execution held the
--                 step; undo these, newest first (possibly none)
--   {"busy"}      another execution holds the step;  {"stop"} nothing to do;  {"missing"}
local i = tonumber(ARGV[1])
local status = get('status')
if not status then return {'missing'} end
local n = tonumber(get('n'))
local st = sget(i, 'st')
if st == 'COMPLETED' then
  if status == 'RUNNING' and i < n - 1 and sget(i + 1, 'st') == 'PENDING' then return {'resume'} end
  return {'stop'}
end
if st ~= 'PENDING' and st ~= 'RUNNING' then return {'stop'} end
local lease = sget(i, 'lease')
-- A lease emptied by the sweep (its execution showed no sign of life after a failed attempt)
-- may be taken over; any other execution's is not.
if st == 'RUNNING' and lease ~= ARGV[2] and lease ~= '' then return {'busy'} end
local now = now_ms()
local bound = now + tonumber(ARGV[3])
if st == 'PENDING' then
  if status ~= 'RUNNING' or (i > 0 and sget(i - 1, 'st') ~= 'COMPLETED') then return {'stop'} end
  local dl = now + tonumber(sget(i, 'to'))
  sset(i, 'st', 'RUNNING', 'lease', ARGV[2], 'att', 1, 't0', now, 'dl', dl, 'unc', '0', 'fatt', 0,
    'bc', CALL, 'ab', bound)
  redis.call('HSET', SAGA, 'cur', i)
  set_step_timer('step', i, dl)
  clear_timer('next')
  commit(now, 'step_started', i)
  return with_context({'run', 1, dl - now}, i - 1)
end
-- RUNNING under our lease (a Celery retry, a redelivery after a lost worker, our own call
-- repeated) or a free one (a re-drive by the sweep).
local same = lease == ARGV[2] and sget(i, 'bc') == CALL
local att = tonumber(sget(i, 'att'))
local dl = tonumber(sget(i, 'dl'))
-- An open attempt that is not this very call vanished mid-way (its execution is gone: we
-- hold its lease): it may have called the service, so the outcome is uncertain.
if attempt_open(i) and not same then sset(i, 'unc', '1') end
local unc = sget(i, 'unc')
if status ~= 'RUNNING' then
  return fail_step(i, now, unc, 'error', 'the saga is being compensated: no further attempt')
end
if now >= dl then return fail_step(i, now, unc, 'timeout', "the step's deadline passed") end
if same then
  -- The attempt granted by this call was never used: grant it again (a new execution of the
  -- same task has a new time limit, so its bound moves).
  sset(i, 'ab', bound)
  return with_context({'run', att, dl - now}, i - 1)
end
if att >= tonumber(sget(i, 'ma')) then
  return fail_step(i, now, unc, 'error', 'no attempts left after lost executions')
end
sset(i, 'att', att + 1, 'lease', ARGV[2], 'bc', CALL, 'ab', bound)
set_step_timer('step', i, dl)
commit(now, 'step_attempt', i)
return with_context({'run', att + 1, dl - now}, i - 1)
