-- The sweep found timer ARGV[1] due (by Redis's clock): decide, atomically, what it means.
-- KEYS: common 1..11 (lib.lua) of the timer's saga.
-- ARGV[1] the timer member ("saga|<id>", "next|<id>", "step|<id>|<i>", "cnext|<id>",
--         "comp|<id>|<i>")
-- Returns one of:
--   {"compensate", i...}    the saga (or step) deadline passed: compensation started
--   {"deferred"}            a deadline passed while an attempt is in flight: the saga is
--                           fenced (COMPENSATING), the undo waits for the attempt to end
--   {"redrive_steps", k}    no sign of life: run the steps from k again (same idempotency keys)
--   {"redrive_comps", i...} no sign of life: run these compensations again, in this order
--   {"compensation_failed"} a compensation's deadline passed: COMPENSATION_FAILED
--   {"none"}                nothing to do any more (the timer is dropped)
local member = ARGV[1]
local kind = string.match(member, '^(%a+)|')
local index = tonumber(string.match(member, '|(%d+)$') or '')
local status = get('status')
local function drop() redis.call('ZREM', KEYS[3], member); return {'none'} end
if not status then return drop() end
local now = now_ms()
local due = redis.call('ZSCORE', KEYS[3], member)
if not due or tonumber(due) > now then return {'none'} end  -- moved on meanwhile
local n = tonumber(get('n'))

if kind == 'saga' then
  if (status ~= 'RUNNING' and status ~= 'PENDING') or now < tonumber(get('deadline')) then
    return drop()
  end
  -- The saga's deadline passed: no step or attempt starts any more. A step between attempts
  -- or waiting for its reply event is settled now; one whose attempt is in flight is fenced
  -- off, and undone only once that attempt has ended (see lib.lua `fence`).
  local message = 'the saga deadline passed'
  local j = in_flight(n)
  redis.call('HSET', SAGA, 'failure', failure_json(j, 'timeout', message))
  drop()
  if j ~= nil and (sget(j, 'st') == 'WAITING' or not attempt_open(j)) then
    local unc = sget(j, 'unc')
    if sget(j, 'st') == 'WAITING' then unc = '1' end  -- its command is out
    mark_failed(j, now, unc, message .. ' while the step was in progress')
  elseif j ~= nil then
    return fence(j, now, 'saga_timed_out', message)
  end
  commit(now, 'saga_timed_out', j)
  return reply_with('compensate', start_compensation(now))
end

if kind == 'next' then
  if status ~= 'RUNNING' or in_flight(n) ~= nil then return drop() end
  for k = 0, n - 1 do
    if sget(k, 'st') == 'PENDING' then
      set_timer('next', now + REDRIVE_MS)
      commit(now, 'steps_redriven', k)
      return {'redrive_steps', k}
    end
  end
  return drop()
end

if kind == 'step' then
  local st = sget(index, 'st')
  if (st ~= 'RUNNING' and st ~= 'WAITING') or (status ~= 'RUNNING' and status ~= 'COMPENSATING')
  then
    return drop()
  end
  local dl = tonumber(sget(index, 'dl'))
  if st == 'WAITING' then
    if now < dl then
      set_step_timer('step', index, dl)
      return {'none'}
    end
    drop()  -- its command is out: the service may have acted
    return fail_step(index, now, '1', 'timeout', 'the step deadline passed without a reply')
  end
  if attempt_open(index) then
    -- (A saga whose attempt began before attempts had bounds: its deadline stands in.)
    local ab = tonumber(sget(index, 'ab') or sget(index, 'dl'))
    if status == 'RUNNING' then
      if now < dl then
        set_step_timer('step', index, dl)
        return {'none'}
      end
      -- The step's deadline passed with its attempt in flight (the attempt was told to end
      -- by then): fence the saga; the undo waits for the attempt to end.
      local message = 'the step deadline passed while an attempt was in flight'
      redis.call('HSET', SAGA, 'failure', failure_json(index, 'timeout', message))
      return fence(index, now, 'step_timed_out', message)
    end
    -- Fenced: settle once the attempt has provably ended (its execution never reported).
    if now < ab then
      set_step_timer('step', index, ab)
      return {'none'}
    end
    drop()
    return fail_step(index, now, '1', 'timeout',
      'the attempt did not report before its time limit; its outcome is unknown')
  end
  -- No attempt in flight: between attempts (its retry message is due).
  if status == 'COMPENSATING' or now >= dl then
    drop()
    return fail_step(index, now, sget(index, 'unc'), 'timeout',
      'the step deadline passed; last error: ' .. (sget(index, 'err') or ''))
  end
  -- Before the deadline: the next attempt's message never came (lost). Free the lease so a
  -- new execution may take over, and look again at the deadline.
  sset(index, 'lease', '')
  set_step_timer('step', index, dl)
  commit(now, 'step_redriven', index)
  return {'redrive_steps', index}
end

if kind == 'cnext' then
  if status ~= 'COMPENSATING' then return drop() end
  for j = 0, n - 1 do
    if sget(j, 'cst') == 'COMPENSATING' then return drop() end
  end
  if in_flight(n) ~= nil then return drop() end  -- the in-flight step starts it when settled
  local list = compensations_left(n)
  if #list == 0 then return drop() end
  set_timer('cnext', now + REDRIVE_MS)
  commit(now, 'compensations_redriven', list[1])
  return reply_with('redrive_comps', list)
end

if kind == 'comp' then
  if status ~= 'COMPENSATING' or sget(index, 'cst') ~= 'COMPENSATING' then return drop() end
  local cdl = tonumber(sget(index, 'cdl'))
  if now >= cdl then
    local message = 'no result within COMPENSATION_TIMEOUT_SECONDS'
    sset(index, 'cst', 'COMPENSATION_FAILED', 'st', 'COMPENSATION_FAILED', 'cerr', message,
      'clease', '')
    stat('compensations|failed')
    redis.call('HSET', SAGA, 'cfailure', failure_json(index, 'timeout', message))
    set_status('COMPENSATION_FAILED')
    clear_timers(n)
    count_final(now, 'COMPENSATION_FAILED')
    commit(now, 'compensation_failed', index, message)
    return {'compensation_failed'}
  end
  sset(index, 'clease', '')
  set_step_timer('comp', index, cdl)
  commit(now, 'compensation_redriven', index)
  -- This one and the older ones still pending, newest first.
  local list = {index}
  for j = index - 1, 0, -1 do
    if sget(j, 'cst') == 'PENDING' then list[#list + 1] = j end
  end
  return reply_with('redrive_comps', list)
end
return drop()
