-- A person settles step i's compensation by hand: "resolve" (they undid it outside: it
-- counts as COMPENSATED) or "skip" (nothing to undo: SKIPPED). Allowed for a compensation
-- that failed or has not started, while the saga is COMPENSATION_FAILED, or COMPENSATING
-- with no step attempt in flight and that compensation not started (a queued execution of
-- it then finds it done and the chain goes on). Once no compensation has failed, the
-- older undos continue (newest first) or, with none left, the saga is COMPENSATED.
-- ARGV[1] step index, ARGV[2] "resolve" or "skip", ARGV[3] reason, ARGV[4] actor
-- Returns {"compensate", i...} (run these, newest first; none: the saga is COMPENSATED),
-- {"ok"} (recorded; the saga still needs a person), {"missing"}, or
-- {"conflict", status, why}.
local i = tonumber(ARGV[1])
local status = get('status')
if not status then return {'missing'} end
local n = tonumber(get('n'))
if status ~= 'COMPENSATION_FAILED' and status ~= 'COMPENSATING' then
  return {'conflict', status, 'the saga is not being compensated'}
end
if sget(i, 'hc') ~= '1' then return {'conflict', status, 'the step has no compensation'} end
local cst = sget(i, 'cst')
if cst ~= 'COMPENSATION_FAILED' and cst ~= 'PENDING' then
  return {'conflict', status, 'its compensation is ' .. cst}
end
if status == 'COMPENSATING' then
  if in_flight(n) ~= nil then
    return {'conflict', status, 'a step attempt is in flight: wait for it to end'}
  end
  if cst ~= 'PENDING' then return {'conflict', status, 'its compensation is ' .. cst} end
end
local now = now_ms()
local event = 'compensation_resolved'
if ARGV[2] == 'skip' then
  sset(i, 'cst', 'SKIPPED', 'clease', '', 'cdl', '')
  if cst == 'COMPENSATION_FAILED' then
    -- Its effect stands, as the person says it may: the step shows how it ended (a step
    -- with an output completed; one without failed with an uncertain outcome).
    local ended = 'FAILED'
    if (sget(i, 'out') or '') ~= '' then ended = 'COMPLETED' end
    sset(i, 'st', ended)
  end
  event = 'compensation_skipped'
else
  sset(i, 'cst', 'COMPENSATED', 'st', 'COMPENSATED', 'clease', '', 'cdl', '', 'ct1', now,
    'cman', '1')
end
clear_step_timer('comp', i)
local failed = false
for j = 0, n - 1 do
  if sget(j, 'cst') == 'COMPENSATION_FAILED' then failed = true end
end
if failed then
  commit(now, event, i, ARGV[3], ARGV[4])
  return {'ok'}
end
redis.call('HSET', SAGA, 'cfailure', '')
local left = compensations_left(n)
local running = false
for j = 0, n - 1 do
  if sget(j, 'cst') == 'COMPENSATING' then running = true end
end
if #left == 0 and not running then
  commit(now, event, i, ARGV[3], ARGV[4])
  finish(now, 'COMPENSATED')
  commit(now, 'saga_compensated')
  return {'compensate'}
end
if status == 'COMPENSATION_FAILED' then
  set_status('COMPENSATING')
  set_timer('cnext', now + REDRIVE_MS)
  commit(now, event, i, ARGV[3], ARGV[4])
  return reply_with('compensate', left)
end
commit(now, event, i, ARGV[3], ARGV[4])
return {'ok'}  -- COMPENSATING: the chain under way runs the rest
