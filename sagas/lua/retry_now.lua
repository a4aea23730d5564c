-- A person asks step i, waiting out a retry countdown, to make its next attempt now. The
-- step's lease is freed (as the sweep's re-drive does), so a new execution takes the step;
-- the execution whose countdown is running finds it held (busy) and stops.
-- ARGV[1] step index, ARGV[2] reason, ARGV[3] actor
-- Returns {"redrive_steps", i} (run steps i.. again), {"missing"}, or
-- {"conflict", status, why}.
local i = tonumber(ARGV[1])
local status = get('status')
if not status then return {'missing'} end
if status ~= 'RUNNING' then return {'conflict', status, 'the saga is not running'} end
local st = sget(i, 'st')
if st ~= 'RUNNING' then return {'conflict', status, 'the step is ' .. st} end
if attempt_open(i) or tonumber(sget(i, 'att')) == 0 then
  return {'conflict', status, 'an attempt is in flight, not waiting for a retry'}
end
local now = now_ms()
if now >= tonumber(sget(i, 'dl')) then
  return {'conflict', status, "the step's deadline has passed"}
end
sset(i, 'lease', '')
set_step_timer('step', i, math.min(tonumber(sget(i, 'dl')), now + REDRIVE_MS))
commit(now, 'step_retry_requested', i, ARGV[2], ARGV[3])
return {'redrive_steps', i}
