-- An event for this saga arrived (from the events stream, once per delivery).
-- ARGV[1] event type, ARGV[2] data JSON, ARGV[3] event id (the stream entry id)
-- Settles the step that awaits this type: {"next", i}, {"saga_completed"}, {"compensate",
-- i...}. An event for a step that has not started waiting yet is kept on the step and applied
-- when it does ({"early", i}). {"duplicate"}: this event id was applied already.
-- {"late", i, status}: the step no longer waits (e.g. it timed out): refused.
-- {"unmatched"}: no step of this saga awaits this type. {"missing"}: no such saga.
local status = get('status')
if not status then return {'missing'} end
local n = tonumber(get('n'))
local kind, target = nil, nil
for j = 0, n - 1 do
  if sget(j, 'ei') == ARGV[3] then return {'duplicate'} end
end
for j = 0, n - 1 do
  local outcome = nil
  if sget(j, 'aws') == ARGV[1] then outcome = 'success' end
  if sget(j, 'awf') == ARGV[1] then outcome = 'failure' end
  if outcome then
    local st = sget(j, 'st')
    if st == 'WAITING' then
      return settle(j, outcome, ARGV[2], ARGV[3], ARGV[1], now_ms())
    end
    if (st == 'PENDING' or st == 'RUNNING') and status == 'RUNNING' and not sget(j, 'eo') then
      sset(j, 'eo', outcome, 'ed', ARGV[2], 'ei', ARGV[3], 'et', ARGV[1])
      commit(now_ms(), 'event_early', j, ARGV[1])
      return {'early', j}
    end
    if target == nil then target = j; kind = st end
  end
end
if target ~= nil then return {'late', target, kind} end
return {'unmatched'}
