-- Shared by every transition script (the store prepends it).
-- KEYS layout common to all transitions:
--   KEYS[1]  saga hash            <prefix>{<id>}
--   KEYS[2]  saga history list    <prefix>{<id>}:history
--   KEYS[3]  timers sorted set    <prefix>timers   (score epoch ms: by then the sweep looks)
--            "saga|<id>"       the saga's deadline
--            "next|<id>"       the next step should have started (its message may be lost)
--            "step|<id>|<i>"   step i's deadline, or after a retry: countdown + grace
--            "cnext|<id>"      the next compensation should have started
--            "comp|<id>|<i>"   step i's compensation deadline, or after a retry: countdown + grace
--   KEYS[4]  stats hash           <prefix>stats    (counters for metrics)
--   KEYS[5..10] status indexes    <prefix>idx:status:<STATUS> (score = created epoch ms)
--   KEYS[11] finished sorted set  <prefix>finished (score = finished epoch ms, for retention)
-- One key is not passed in KEYS but derived here: the status index of the saga's type,
-- <prefix>idx:ts:<type>:<STATUS> (Keys.type_status), which set_status moves the saga between.
-- Standalone Redis allows it; these scripts were not Cluster-ready anyway (docs/design.md).
-- Step fields in the saga hash are "<i>:<field>" with i 0-based: st (status), att (attempts),
-- lease (task id of the execution holding the step), fatt (last attempt whose failure was
-- recorded: while fatt ~= att an attempt is open, i.e. in flight or vanished), unc ("1" =
-- outcome uncertain), t0/t1 (epoch ms), dl (deadline epoch ms), ab (the open attempt's bound:
-- by then its execution has provably ended, killed by its Celery hard time limit if need be),
-- bc (the call id of the step_begin that granted the attempt), to (timeout ms), ma (max
-- attempts), out (JSON output), err, hc ("1" = has a compensation), cst/catt/clease/cdl/cerr
-- (the compensation's status, attempts, lease, deadline, error), cbc (comp_begin's call id).
-- Saga fields lc/lr: the call id and reply of the last transition (a resent call gets the
-- same reply, see the end of this file); fin: the final status the counters already counted.
-- The definition is not in the hash: field "def" holds its digest, and the JSON is the string
-- <prefix>def:<digest>, shared by every saga with the same definition (Keys.definition).
-- History entries are compact JSON arrays: [ms since created, version, event, saga status,
-- step name or null, message (only when there is one, or null before an actor), and for a
-- person's action: actor, data (an object, if any)].

local SAGA = KEYS[1]
local STATUS_INDEX = {PENDING = 5, RUNNING = 6, COMPLETED = 7, COMPENSATING = 8,
                      COMPENSATED = 9, COMPENSATION_FAILED = 10}
local HISTORY_LIMIT = __HISTORY_LIMIT__
-- Upper bounds (seconds) of the saga duration histogram; cumulative, like Prometheus's.
local DURATION_BUCKETS = {__DURATION_BUCKETS__}
-- How long a queued execution may show no sign of life before the sweep re-drives it (ms).
local REDRIVE_MS = __REDRIVE_MS__
-- Sagas RUNNING at once (MAX_CONCURRENT_SAGAS); more wait as PENDING.
local MAX_RUNNING = __MAX_RUNNING__
local KEY_PREFIX = "__KEY_PREFIX__"
-- Fields a COMPLETED or COMPENSATED saga no longer needs (see repack): they only steer
-- executions in flight or admission. Step fields are "<i>:<name>".
local TRANSIENT = {arrived = true, cur = true, lc = true, lr = true}
local TRANSIENT_STEP = {lease = true, clease = true, dl = true, cdl = true, to = true,
                        ma = true, fatt = true, ab = true, bc = true, cbc = true}
-- Tests only: a key holding the time (epoch ms) that a test sets and moves forward instead
-- of sleeping ("" in production: Redis's own clock).
local CLOCK_KEY = "__CLOCK_KEY__"
-- Final statuses this transition reached, for its webhooks (flush_outbox, below).
local NOTIFY = {}

-- Redis's clock: epoch ms, and the microseconds within that ms.
local function clock()
  if CLOCK_KEY ~= '' then
    local frozen = redis.call('GET', CLOCK_KEY)
    if frozen then return tonumber(frozen), 0 end
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), tonumber(t[2]) % 1000
end

local function now_ms()
  local ms = clock()
  return ms
end

local function get(field)
  local v = redis.call('HGET', SAGA, field)
  if v == false then return nil end
  return v
end

local function sget(i, field) return get(i .. ':' .. field) end

local function sset(i, ...)
  local args = {...}
  local flat = {}
  for k = 1, #args, 2 do
    flat[#flat + 1] = i .. ':' .. args[k]
    flat[#flat + 1] = args[k + 1]
  end
  redis.call('HSET', SAGA, unpack(flat))
end

local function saga_id() return get('id') end

local function type_status_key(status)
  return KEY_PREFIX .. 'idx:ts:' .. get('type') .. ':' .. status
end

local function set_status(new)
  local old = get('status')
  local id = saga_id()
  if old and STATUS_INDEX[old] then
    redis.call('ZREM', KEYS[STATUS_INDEX[old]], id)
    redis.call('ZREM', type_status_key(old), id)
  end
  -- Scores are creation epoch ms; PENDING's carry microseconds too (field "arrived"), so that
  -- admission is first come, first served even within one millisecond.
  local created = get('created')
  local score = created
  if new == 'PENDING' then score = get('arrived') or score end
  redis.call('ZADD', KEYS[STATUS_INDEX[new]], score, id)
  redis.call('ZADD', type_status_key(new), created, id)
  redis.call('HSET', SAGA, 'status', new)
end

-- Bump the version (the saga's fencing token), stamp, and append to the history. A person's
-- action (sagas/repair.py) also names its `actor` (the API key's name) and may add `data`
-- (a JSON object, as text).
local function commit(now, event, step, message, actor, data)
  local v = redis.call('HINCRBY', SAGA, 'ver', 1)
  redis.call('HSET', SAGA, 'updated', now)
  local entry = {now - tonumber(get('created')), v, event, get('status'), cjson.null}
  if step ~= nil then entry[5] = get(step .. ':name') end
  if message ~= nil and message ~= '' then entry[6] = message end
  if actor ~= nil and actor ~= '' then
    entry[6] = entry[6] or cjson.null
    entry[7] = actor
    if data ~= nil and data ~= '' then entry[8] = cjson.decode(data) end
  end
  redis.call('RPUSH', KEYS[2], cjson.encode(entry))
  redis.call('LTRIM', KEYS[2], -HISTORY_LIMIT, -1)
  return v
end

local function stat(field, by) redis.call('HINCRBY', KEYS[4], field, by or 1) end

local function set_timer(name, at) redis.call('ZADD', KEYS[3], at, name .. '|' .. saga_id()) end
local function clear_timer(name) redis.call('ZREM', KEYS[3], name .. '|' .. saga_id()) end
local function set_step_timer(kind, i, at)
  redis.call('ZADD', KEYS[3], at, kind .. '|' .. saga_id() .. '|' .. i)
end
local function clear_step_timer(kind, i) redis.call('ZREM', KEYS[3], kind .. '|' .. saga_id() .. '|' .. i) end

local function clear_timers(n)
  local id = saga_id()
  redis.call('ZREM', KEYS[3], 'saga|' .. id, 'next|' .. id, 'cnext|' .. id)
  for j = 0, n - 1 do
    redis.call('ZREM', KEYS[3], 'step|' .. id .. '|' .. j, 'comp|' .. id .. '|' .. j)
  end
end

-- Rewrite the hash of a saga that reached COMPLETED or COMPENSATED without what only a saga
-- in flight needs (TRANSIENT fields, empty values: every reader takes a missing field for
-- ""). A new key lets Redis choose its compact encoding (listpack) again when the values are
-- small: a hash never converts back by itself. A finished saga is kept for days, so this
-- is what its memory is made of (docs/performance.md).
local function repack()
  local all = redis.call('HGETALL', SAGA)
  local keep = {}
  for k = 1, #all, 2 do
    local field, value = all[k], all[k + 1]
    local name = string.match(field, '^%d+:(.+)$')
    local transient = (name and TRANSIENT_STEP[name]) or (not name and TRANSIENT[field])
    if value ~= '' and not transient and not (name == 'unc' and value == '0') then
      keep[#keep + 1] = field
      keep[#keep + 1] = value
    end
  end
  redis.call('DEL', SAGA)
  for k = 1, #keep, 200 do
    redis.call('HSET', SAGA, unpack(keep, k, math.min(k + 199, #keep)))
  end
end

-- Count a saga reaching a final status. `finished|...` and the durations count every saga
-- once, by the first final status it reached; a saga that reaches another one later (a
-- COMPLETED saga compensated by request, a COMPENSATION_FAILED one retried) counts in
-- `refinished|...` instead, so that finished sagas never outnumber started ones.
local function count_final(now, status)
  NOTIFY[#NOTIFY + 1] = status
  if get('fin') then
    stat('refinished|' .. get('type') .. '|' .. status)
    return
  end
  redis.call('HSET', SAGA, 'fin', status)
  stat('finished|' .. get('type') .. '|' .. status)
  local ms = now - tonumber(get('created'))
  stat('duration_ms|' .. status, ms)
  stat('duration_count|' .. status)
  for _, le in ipairs(DURATION_BUCKETS) do
    if ms <= le * 1000 then stat('duration_bucket|' .. status .. '|' .. le) end
  end
end

-- Completion webhooks (sagas/webhooks.py): a saga whose field "wh" names a target ({service,
-- path}, set at creation) gets one outbox entry per final status it reaches, written by the
-- transition that reaches it. `count_final` notes the status; the store's wrapper calls
-- `flush_outbox` once the script's body is done, so that the entry's snapshot is the saga as
-- that transition leaves it (version, history, repack included). Entry: hash
-- <prefix>webhook:<id>, due in <prefix>webhooks:due (by then the sweep sends it if no
-- execution has); id "saga_<saga id>_<status>" ("_2", "_3"... when the saga reaches that
-- status again: only COMPENSATION_FAILED can). The ids go back to the caller appended to
-- the reply (RedisStore strips them), so it can enqueue the sends at once.
local WEBHOOK_REDRIVE_MS = __WEBHOOK_REDRIVE_MS__
local function flush_outbox(reply)
  if #NOTIFY == 0 or redis.call('EXISTS', SAGA) == 0 then return reply end
  local target = get('wh')
  if not target then return reply end
  local all = redis.call('HGETALL', SAGA)
  local snapshot = {}
  for k = 1, #all, 2 do
    local field = all[k]
    -- Not sent: the payload and the outputs (the receiver may read them with GET /saga/{id}).
    if field ~= 'payload' and field ~= 'lr' and field ~= 'lc' and not string.match(field, ':out$')
    then
      snapshot[field] = all[k + 1]
    end
  end
  local ids = {}
  local now = tonumber(get('updated'))
  for _, status in ipairs(NOTIFY) do
    local count = redis.call('HINCRBY', SAGA, 'whn:' .. status, 1)
    local id = 'saga_' .. saga_id() .. '_' .. string.lower(status)
    if count > 1 then id = id .. '_' .. count end
    snapshot.status = status
    redis.call('HSET', KEY_PREFIX .. 'webhook:' .. id, 'id', id, 'saga', saga_id(),
      'status', status, 'target', target, 'saga_hash', cjson.encode(snapshot), 'created', now,
      'since', now, 'attempts', 0, 'state', 'pending')
    redis.call('ZADD', KEY_PREFIX .. 'webhooks:due', now + WEBHOOK_REDRIVE_MS, id)
    stat('webhooks|queued')
    ids[#ids + 1] = id
  end
  reply[#reply + 1] = ids
  return reply
end

-- Enter a final status (COMPLETED or COMPENSATED): stamp, count, index for retention.
local function finish(now, status)
  set_status(status)
  redis.call('HSET', SAGA, 'finished', now)
  clear_timers(tonumber(get('n')))
  count_final(now, status)
  repack()
  redis.call('ZADD', KEYS[11], now, saga_id())
  -- Whoever waits for sagas to end can subscribe instead of polling (channel = KEYS[11]'s name).
  redis.call('PUBLISH', KEYS[11], saga_id() .. ' ' .. status)
end

local function failure_json(step, reason, message)
  local name = cjson.null
  if step ~= nil then name = get(step .. ':name') end
  return cjson.encode({step = name, reason = reason, message = message})
end

-- Index of a step whose execution is in flight (RUNNING or WAITING), or nil.
local function in_flight(n)
  for j = 0, n - 1 do
    local st = sget(j, 'st')
    if st == 'RUNNING' or st == 'WAITING' then return j end
  end
  return nil
end

-- Decide which steps to undo, newest first, and mark everything else. Returns the list
-- (0-based indexes). Completed steps and steps whose outcome is uncertain are undone when
-- they have a compensation; compensations left PENDING or FAILED by an earlier round are
-- retried; steps that never ran become SKIPPED. An empty list finishes the saga COMPENSATED.
local function start_compensation(now)
  local n = tonumber(get('n'))
  local list = {}
  for j = n - 1, 0, -1 do
    local st = sget(j, 'st')
    local cst = sget(j, 'cst')
    local has = sget(j, 'hc') == '1'
    if st == 'PENDING' then
      sset(j, 'st', 'SKIPPED')
      if has then sset(j, 'cst', 'SKIPPED') end
    elseif has and (cst == 'PENDING' or cst == 'COMPENSATION_FAILED' or cst == 'COMPENSATING') then
      local needed = st == 'COMPLETED' or st == 'COMPENSATING' or st == 'COMPENSATION_FAILED'
        or (st == 'FAILED' and sget(j, 'unc') == '1')
      if needed then
        sset(j, 'cst', 'PENDING', 'clease', '', 'cdl', '', 'catt', sget(j, 'catt') or '0')
        list[#list + 1] = j
      else
        sset(j, 'cst', 'SKIPPED')
      end
    end
  end
  redis.call('HSET', SAGA, 'cfailure', '', 'cur', -1)
  if #list == 0 then
    finish(now, 'COMPENSATED')
    commit(now, 'saga_compensated')
  else
    set_status('COMPENSATING')
    clear_timer('saga')
    clear_timer('next')
    set_timer('cnext', now + REDRIVE_MS)
    commit(now, 'compensation_started')
  end
  return list
end

-- Compensations still to run, newest first (after a lost message or a failed round).
local function compensations_left(n)
  local list = {}
  for j = n - 1, 0, -1 do
    if sget(j, 'cst') == 'PENDING' then list[#list + 1] = j end
  end
  return list
end

local function reply_with(code, list)
  local out = {code}
  for k = 1, #list do out[#out + 1] = list[k] end
  return out
end

-- Step i has an open attempt: one began and neither its failure nor its success was
-- recorded. Its execution is in flight, or vanished (a killed worker) after it may have
-- called the service.
local function attempt_open(i)
  return sget(i, 'st') == 'RUNNING' and tonumber(sget(i, 'fatt')) ~= tonumber(sget(i, 'att'))
end

-- Mark step i FAILED (uncertain if `unc` is "1" or it already was).
local function mark_failed(i, now, unc, message)
  if unc == '1' then sset(i, 'unc', '1') end
  sset(i, 'st', 'FAILED', 'err', message, 't1', now, 'lease', '')
  clear_step_timer('step', i)
  stat('steps|failed')
end

-- Step i ends FAILED for good: record it (the saga's failure too, if it was still running)
-- and start compensating. Returns the transition's reply {"compensate", i...}.
local function fail_step(i, now, unc, reason, message)
  mark_failed(i, now, unc, message)
  if get('status') == 'RUNNING' then
    redis.call('HSET', SAGA, 'failure', failure_json(i, reason, message))
  end
  commit(now, 'step_failed', i, message)
  return reply_with('compensate', start_compensation(now))
end

-- Fence the saga while step j's attempt is in flight: COMPENSATING at once (no new step or
-- attempt starts), but nothing is undone before that attempt has ended. Whoever sees it end
-- settles the step and starts the undo: its execution (result, failure, the next retry's
-- step_begin, a redelivery), or the sweep once the attempt's bound `ab` has passed.
local function fence(j, now, event, message, actor)
  set_status('COMPENSATING')
  clear_timer('saga')
  clear_timer('next')
  set_step_timer('step', j, math.max(now, tonumber(sget(j, 'ab') or sget(j, 'dl'))))
  commit(now, event, j, message, actor)
  return {'deferred'}
end

-- What a step or compensation execution needs: payload, definition, correlation id, type,
-- trace context (traceparent) and the outputs of steps 0..upto (JSON strings or false).
local function context(upto)
  local fields = {'payload', 'def', 'corr', 'type', 'tp'}
  for j = 0, upto do fields[#fields + 1] = j .. ':out' end
  return redis.call('HMGET', SAGA, unpack(fields))
end

local function with_context(head, upto)
  local ctx = context(upto)
  for k = 1, #ctx do head[#head + 1] = ctx[k] end
  return head
end

-- An event settles step i (WAITING): "success" completes it with the event's data as output,
-- "failure" fails it (the service answered: certain). Returns the transition's reply.
local function settle(i, outcome, data, event_id, event_type, now)
  clear_step_timer('step', i)
  local status = get('status')
  local n = tonumber(get('n'))
  if outcome == 'success' then
    sset(i, 'st', 'COMPLETED', 'out', data, 't1', now, 'err', '', 'unc', '0', 'ei', event_id)
    stat('steps|completed')
    if status == 'RUNNING' then
      if i == n - 1 then
        redis.call('HSET', SAGA, 'cur', -1)
        finish(now, 'COMPLETED')
        commit(now, 'saga_completed', i, event_type)
        return {'saga_completed'}
      end
      set_timer('next', now + REDRIVE_MS)
      commit(now, 'step_completed', i, event_type)
      return {'next', i}
    end
    commit(now, 'step_completed', i, event_type)
    return reply_with('compensate', start_compensation(now))
  end
  local message = 'failure event ' .. event_type .. ': ' .. data
  sset(i, 'st', 'FAILED', 'err', message, 't1', now, 'unc', '0', 'ei', event_id)
  stat('steps|failed')
  if status == 'RUNNING' then
    redis.call('HSET', SAGA, 'failure', failure_json(i, 'error', message))
  end
  commit(now, 'step_failed', i, message)
  return reply_with('compensate', start_compensation(now))
end

-- A resent call (redis-py resends a command whose reply was lost; an execution carries its
-- unanswered call over a Celery retry) gets the reply of the first, without acting twice.
-- The store appends the call id to ARGV and wraps each script's body in a function.
local CALL = table.remove(ARGV)
local function remembered()
  if CALL ~= '' and redis.call('HGET', SAGA, 'lc') == CALL then
    local reply = redis.call('HGET', SAGA, 'lr')
    if reply then return cjson.decode(reply) end
  end
  return nil
end
local function remember(reply, version_before)
  -- Only calls that changed the saga are kept (a refusal writes nothing); grants ("run") are
  -- not: they carry the context, and begin scripts recognise their own repeat (field bc).
  if CALL ~= '' and reply[1] ~= 'run' and redis.call('EXISTS', SAGA) == 1
     and redis.call('HGET', SAGA, 'ver') ~= version_before then
    redis.call('HSET', SAGA, 'lc', CALL, 'lr', cjson.encode(reply))
  end
  return reply
end
