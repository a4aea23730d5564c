-- A COMPENSATED or COMPENSATION_FAILED saga was run again as saga ARGV[1] (sagas/repair.py
-- created it first, with rerun_of pointing here): record the link, once.
-- ARGV[1] the new saga's id, ARGV[2] reason, ARGV[3] actor, ARGV[4] data (JSON object)
-- Returns {"linked"}, {"already"} (this rerun was linked before) or {"missing"}.
local status = get('status')
if not status then return {'missing'} end
local reruns = cjson.decode(get('reruns') or '[]')
for _, id in ipairs(reruns) do
  if id == ARGV[1] then return {'already'} end
end
reruns[#reruns + 1] = ARGV[1]
redis.call('HSET', SAGA, 'reruns', cjson.encode(reruns))
commit(now_ms(), 'rerun_started', nil, ARGV[2], ARGV[3], ARGV[4])
return {'linked'}
