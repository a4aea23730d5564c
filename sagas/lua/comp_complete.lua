-- Record a successful compensation of step i.
-- ARGV[1] step index, ARGV[2] lease, ARGV[3] attempt, the call's id is CALL (lib.lua;
-- see step_complete)
-- Returns {"next"}, {"saga_compensated"}, {"duplicate"} or {"stale"}.
local i = tonumber(ARGV[1])
local cst = sget(i, 'cst')
if cst == 'COMPENSATED' then
  if sget(i, 'ccid') == CALL then return {'next'} end
  return {'duplicate'}
end
if cst ~= 'COMPENSATING' or sget(i, 'clease') ~= ARGV[2] or sget(i, 'catt') ~= ARGV[3] then
  return {'stale'}
end
local now = now_ms()
sset(i, 'cst', 'COMPENSATED', 'st', 'COMPENSATED', 'cerr', '', 'ct1', now, 'ccid', CALL)
clear_step_timer('comp', i)
stat('compensations|completed')
local n = tonumber(get('n'))
for j = 0, n - 1 do
  local other = sget(j, 'cst')
  if other == 'PENDING' or other == 'COMPENSATING' then
    set_timer('cnext', now + REDRIVE_MS)
    commit(now, 'step_compensated', i)
    return {'next'}
  end
end
commit(now, 'step_compensated', i)
finish(now, 'COMPENSATED')
commit(now, 'saga_compensated')
return {'saga_compensated'}
