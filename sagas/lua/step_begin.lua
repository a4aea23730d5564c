-- An execution of step i wants to make an attempt.
-- ARGV[1] step index, ARGV[2] lease (the Celery task id)
-- Returns one of:
--   {"run", attempt, remaining ms, payload, def, corr, type, out0..out(i-1)}  go ahead
--   {"resume"}    the step already completed and the next one has not started: the chain
--                 continues without a call (a redelivery after the result was committed)
--   {"fenced", uncertain}  compensation was requested while the step was in flight
--   {"expired", uncertain} the step's deadline passed; {"exhausted", uncertain} no attempts left
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
if status ~= 'RUNNING' then
  if st == 'RUNNING' then return {'fenced', sget(i, 'unc') or '0'} end
  return {'stop'}
end
-- A lease emptied by the sweep (its execution showed no sign of life) may be taken over.
if st == 'RUNNING' and sget(i, 'lease') ~= ARGV[2] and sget(i, 'lease') ~= '' then
  return {'busy'}
end
local now = now_ms()
if st == 'PENDING' then
  if i > 0 and sget(i - 1, 'st') ~= 'COMPLETED' then return {'stop'} end
  local dl = now + tonumber(sget(i, 'to'))
  sset(i, 'st', 'RUNNING', 'lease', ARGV[2], 'att', 1, 't0', now, 'dl', dl, 'unc', '0', 'fatt', 0)
  redis.call('HSET', SAGA, 'cur', i)
  set_step_timer('step', i, dl)
  clear_timer('next')
  commit(now, 'step_started', i)
  return with_context({'run', 1, dl - now}, i - 1)
end
-- RUNNING under our lease (a Celery retry, a redelivery after a lost worker) or a free one
-- (a re-drive by the sweep). If the last
-- attempt's failure was never recorded, that attempt vanished mid-way: its outcome is unknown.
local att = tonumber(sget(i, 'att'))
if tonumber(sget(i, 'fatt')) ~= att then sset(i, 'unc', '1') end
local unc = sget(i, 'unc')
local dl = tonumber(sget(i, 'dl'))
if now >= dl then return {'expired', unc} end
if att >= tonumber(sget(i, 'ma')) then return {'exhausted', unc} end
sset(i, 'att', att + 1, 'lease', ARGV[2])
set_step_timer('step', i, dl)
commit(now, 'step_attempt', i)
return with_context({'run', att + 1, dl - now}, i - 1)
