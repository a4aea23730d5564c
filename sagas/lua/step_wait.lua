-- An event step published its command: it now waits for the reply event.
-- ARGV[1] step index, ARGV[2] lease, ARGV[3] attempt
-- Returns {"waiting"}; or, when the reply came early (before this), what settling it gives:
-- {"next", i}, {"saga_completed"}, {"compensate", i...}; also {"compensate", i...} when the
-- saga is being compensated (the command is out: the step fails as uncertain and is undone);
-- {"stale"}.
local i = tonumber(ARGV[1])
if sget(i, 'st') ~= 'RUNNING' or sget(i, 'lease') ~= ARGV[2] or sget(i, 'att') ~= ARGV[3] then
  return {'stale'}
end
local now = now_ms()
sset(i, 'fatt', ARGV[3])
if get('status') ~= 'RUNNING' then
  return fail_step(i, now, '1', 'error', 'the saga is being compensated; the command was out')
end
sset(i, 'st', 'WAITING')
commit(now, 'step_waiting', i)
local early = sget(i, 'eo')
if early then
  return settle(i, early, sget(i, 'ed'), sget(i, 'ei'), sget(i, 'et'), now)
end
return {'waiting'}
