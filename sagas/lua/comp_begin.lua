-- An execution of step i's compensation wants to make an attempt.
-- ARGV[1] step index, ARGV[2] lease (Celery task id), ARGV[3] compensation timeout ms,
-- The call's id (CALL, lib.lua): the same id again is the same call, granted the same attempt.
-- Returns {"run", attempt, remaining ms, payload, def, corr, type, tp, out0..out(i)},
-- {"done"} (already compensated or nothing to undo: the chain continues), {"expired"},
-- {"busy"}, or {"stop"} (the saga is not compensating).
local i = tonumber(ARGV[1])
if get('status') ~= 'COMPENSATING' then return {'stop'} end
local cst = sget(i, 'cst')
if cst == nil or cst == 'COMPENSATED' or cst == 'SKIPPED' then return {'done'} end
if cst ~= 'PENDING' and cst ~= 'COMPENSATING' then return {'stop'} end
if cst == 'COMPENSATING' and sget(i, 'clease') ~= ARGV[2] and sget(i, 'clease') ~= '' then
  return {'busy'}
end
local now = now_ms()
local att = tonumber(sget(i, 'catt') or '0') + 1
if cst == 'PENDING' then
  local dl = now + tonumber(ARGV[3])
  sset(i, 'cst', 'COMPENSATING', 'st', 'COMPENSATING', 'clease', ARGV[2], 'catt', att, 'cdl', dl,
    'cbc', CALL)
  set_step_timer('comp', i, dl)
  clear_timer('cnext')
  commit(now, 'compensation_step_started', i)
  return with_context({'run', att, dl - now}, i)
end
local dl = tonumber(sget(i, 'cdl'))
if now >= dl then return {'expired'} end
if sget(i, 'clease') == ARGV[2] and sget(i, 'cbc') == CALL then
  return with_context({'run', att - 1, dl - now}, i)  -- our own call again: the same attempt
end
sset(i, 'catt', att, 'clease', ARGV[2], 'cbc', CALL)
set_step_timer('comp', i, dl)
commit(now, 'compensation_attempt', i)
return with_context({'run', att, dl - now}, i)
