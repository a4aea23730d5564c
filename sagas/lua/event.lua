-- An event for this saga arrived (from the events stream, once per delivery).
-- ARGV[1] event type, ARGV[2] data JSON, ARGV[3] event id (the stream entry id), ARGV[4] the
-- step the event answers ("" = not said: then the type must point at one step only)
-- Settles the step that awaits this type: {"next", i}, {"saga_completed"}, {"compensate",
-- i...}. A reply that arrives while its step's command is being published (before the step
-- waits) is kept on the step and applied when it does ({"early", i}). {"duplicate"}: this
-- event id was applied already. {"late", i, status}: the step no longer waits (it completed,
-- timed out, or the saga is being compensated), or has not sent its command yet: refused.
-- {"ambiguous"}: several steps await this type and the event does not say which one.
-- {"unmatched"}: no step of this saga awaits this type. {"missing"}: no such saga.
local status = get('status')
if not status then return {'missing'} end
local n = tonumber(get('n'))
local candidates = {}
for j = 0, n - 1 do
  if sget(j, 'ei') == ARGV[3] then return {'duplicate'} end
  if ARGV[4] == '' or sget(j, 'name') == ARGV[4] then
    if sget(j, 'aws') == ARGV[1] then candidates[#candidates + 1] = {j, 'success'} end
    if sget(j, 'awf') == ARGV[1] then candidates[#candidates + 1] = {j, 'failure'} end
  end
end
if #candidates == 0 then return {'unmatched'} end
-- A reply is matched to the step that sent the command, never to another step awaiting the
-- same type: a resent reply for an earlier step must not settle a later one.
if #candidates > 1 then return {'ambiguous'} end
local j, outcome = candidates[1][1], candidates[1][2]
local st = sget(j, 'st')
if st == 'WAITING' then
  return settle(j, outcome, ARGV[2], ARGV[3], ARGV[1], now_ms())
end
-- RUNNING: its command may be out already (a fast service), the step not yet waiting.
if st == 'RUNNING' and status == 'RUNNING' and not sget(j, 'eo') then
  sset(j, 'eo', outcome, 'ed', ARGV[2], 'ei', ARGV[3], 'et', ARGV[1])
  commit(now_ms(), 'event_early', j, ARGV[1])
  return {'early', j}
end
return {'late', j, st}
