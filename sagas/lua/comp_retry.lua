-- Record a failed compensation attempt that will be retried.
-- ARGV[1] step index, ARGV[2] lease, ARGV[3] attempt, ARGV[4] error, ARGV[5] countdown ms
-- Returns {"ok"} or {"stale"}.
local i = tonumber(ARGV[1])
if sget(i, 'cst') ~= 'COMPENSATING' or sget(i, 'clease') ~= ARGV[2]
   or sget(i, 'catt') ~= ARGV[3] then return {'stale'} end
sset(i, 'cerr', ARGV[4])
stat('compensations|retried')
local now = now_ms()
set_step_timer('comp', i, math.min(tonumber(sget(i, 'cdl')), now + tonumber(ARGV[5]) + REDRIVE_MS))
commit(now, 'compensation_retry', i, ARGV[4])
return {'ok'}
