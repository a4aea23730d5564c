-- A person cancels a PENDING saga: it never started, so there is nothing to undo; every step
-- becomes SKIPPED and the saga COMPENSATED, its failure naming the reason "cancelled".
-- ARGV[1] reason, ARGV[2] actor
-- Returns {"compensate"} (no compensation to run), {"missing"} or {"conflict", status}.
local status = get('status')
if not status then return {'missing'} end
if status ~= 'PENDING' then return {'conflict', status} end
local now = now_ms()
redis.call('HSET', SAGA, 'failure', failure_json(nil, 'cancelled', ARGV[1]))
commit(now, 'saga_cancelled', nil, ARGV[1], ARGV[2])
return reply_with('compensate', start_compensation(now))
