-- A step failed for good: record it and start compensating.
-- ARGV[1] step index, ARGV[2] lease ("" = any), ARGV[3] error, ARGV[4] uncertain "1"/"0",
-- ARGV[5] reason ("error" or "timeout")
-- Returns {"compensate", i...} (possibly empty: nothing to undo, the saga is COMPENSATED) or
-- {"duplicate", status} when the step is no longer running (a repeat, or already settled).
local i = tonumber(ARGV[1])
local st = sget(i, 'st')
if st ~= 'RUNNING' and st ~= 'WAITING' then return {'duplicate', st or ''} end
if ARGV[2] ~= '' and sget(i, 'lease') ~= ARGV[2] then return {'duplicate', st} end
local status = get('status')
if status ~= 'RUNNING' and status ~= 'COMPENSATING' then return {'duplicate', st} end
return fail_step(i, now_ms(), ARGV[4], ARGV[5], ARGV[3])
