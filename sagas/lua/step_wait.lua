-- An event step published its command: it now waits for the reply event.
-- ARGV[1] step index, ARGV[2] lease, ARGV[3] attempt
-- Returns {"waiting"}; or, when the reply came early (before this), what settling it gives:
-- {"next", i}, {"saga_completed"}, {"compensate", i...}; {"fenced"} when compensation was
-- requested meanwhile (the command is out: the step is uncertain); {"stale"}.
local i = tonumber(ARGV[1])
if sget(i, 'st') ~= 'RUNNING' or sget(i, 'lease') ~= ARGV[2] or sget(i, 'att') ~= ARGV[3] then
  return {'stale'}
end
if get('status') ~= 'RUNNING' then return {'fenced'} end
local now = now_ms()
sset(i, 'st', 'WAITING', 'fatt', ARGV[3])
commit(now, 'step_waiting', i)
local early = sget(i, 'eo')
if early then
  return settle(i, early, sget(i, 'ed'), sget(i, 'ei'), sget(i, 'et'), now)
end
return {'waiting'}
