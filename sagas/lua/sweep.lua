-- The sweep found timer ARGV[1] due (by Redis's clock): decide, atomically, what it means.
-- KEYS: common 1..11 (lib.lua) of the timer's saga.
-- ARGV[1] the timer member ("saga|<id>", "next|<id>", "step|<id>|<i>", "cnext|<id>",
--         "comp|<id>|<i>")
-- Returns one of:
--   {"compensate", i...}    the saga (or step) deadline passed: compensation started
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
  -- The saga's deadline passed: the step in flight (if any) is fenced off as uncertain and
  -- everything done is undone now; its late result will be refused.
  local j = in_flight(n)
  if j ~= nil then
    sset(j, 'st', 'FAILED', 'unc', '1', 't1', now, 'lease', '',
      'err', 'the saga deadline passed while the step was running')
    clear_step_timer('step', j)
    stat('steps|failed')
  end
  redis.call('HSET', SAGA, 'failure', failure_json(j, 'timeout', 'the saga deadline passed'))
  drop()
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
  if st == 'WAITING' and now < dl then
    set_step_timer('step', index, dl)
    return {'none'}
  end
  if now >= dl then
    -- Deadline passed without a result: uncertain unless the last attempt's failure was seen.
    local unc = sget(index, 'unc')
    if tonumber(sget(index, 'fatt')) ~= tonumber(sget(index, 'att')) then unc = '1' end
    if st == 'WAITING' then unc = '1' end  -- its command is out: the service may have acted
    sset(index, 'st', 'FAILED', 'unc', unc, 't1', now, 'lease', '',
      'err', 'the step deadline passed without a result')
    drop()
    stat('steps|failed')
    if status == 'RUNNING' then
      redis.call('HSET', SAGA, 'failure',
        failure_json(index, 'timeout', 'the step deadline passed without a result'))
    end
    commit(now, 'step_timed_out', index)
    return reply_with('compensate', start_compensation(now))
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
    stat('finished|' .. get('type') .. '|COMPENSATION_FAILED')
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
