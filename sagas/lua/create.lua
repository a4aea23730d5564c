-- Create a saga in RUNNING with every step PENDING.
-- KEYS: common 1..11 (lib.lua), KEYS[12] idx:all, KEYS[13] idx:type:<type>,
--       KEYS[14] idx:corr:<correlation id>, KEYS[15] idempotency key (hash: saga, fp),
--       KEYS[16] def:<digest> (the definition, shared), KEYS[17] defs (digest -> sagas using it)
-- ARGV[1] saga id, ARGV[2] type, ARGV[3] correlation id, ARGV[4] payload JSON,
-- ARGV[5] definition JSON, ARGV[6] saga timeout ms, ARGV[7] request fingerprint ("" = no
-- Idempotency-Key), ARGV[8] idempotency TTL seconds, ARGV[9] the definition's digest,
-- ARGV[10] origin ("" or a JSON object: for a rerun rerun_of, actor, reason, data; for a
-- registered workflow's saga workflow, workflow_version), ARGV[11] the completion webhook (""
-- or a JSON object: service, path), ARGV[12] the saga's trace context (W3C traceparent, ""
-- for none: sagas/tracing.py), then per step 6 values:
-- name, has compensation ("1"/"0"), step timeout ms, max attempts, and for event steps the
-- awaited success and failure event types ("" otherwise).
-- Returns {"created", version} (RUNNING: dispatch its steps), {"pending", version} (no slot:
-- it waits as PENDING, FIFO, until `promote`), {"exists", version} (a repeat of the same call is harmless),
-- {"idempotent", saga id} (the key was used before with the same request: that saga), or
-- {"idempotency_conflict", saga id} (the key was used with a different request).
-- Claiming the key and creating the saga are one step, so concurrent repeats of a request
-- have exactly one winner and nobody can see a key that points at nothing.
if ARGV[7] ~= '' then
  local held = redis.call('HMGET', KEYS[15], 'saga', 'fp')
  if held[1] then
    if held[2] == ARGV[7] then return {'idempotent', held[1]} end
    return {'idempotency_conflict', held[1]}
  end
end
if redis.call('EXISTS', SAGA) == 1 then return {'exists', tonumber(get('ver'))} end
local now, micros = clock()
local arrived = string.format('%d.%03d', now, micros)
local n = (#ARGV - 12) / 6
redis.call('SET', KEYS[16], ARGV[5], 'NX')
redis.call('HINCRBY', KEYS[17], ARGV[9], 1)
redis.call('HSET', SAGA, 'id', ARGV[1], 'type', ARGV[2], 'corr', ARGV[3], 'payload', ARGV[4],
  'def', ARGV[9], 'n', n, 'created', now, 'updated', now, 'deadline', now + tonumber(ARGV[6]),
  'finished', '', 'failure', '', 'cfailure', '', 'cur', -1, 'ver', 0, 'arrived', arrived,
  'tp', ARGV[12])
for j = 0, n - 1 do
  local base = 12 + j * 6
  sset(j, 'name', ARGV[base + 1], 'st', 'PENDING', 'att', 0, 'hc', ARGV[base + 2],
    'to', ARGV[base + 3], 'ma', ARGV[base + 4], 'aws', ARGV[base + 5], 'awf', ARGV[base + 6])
  if ARGV[base + 2] == '1' then sset(j, 'cst', 'PENDING', 'catt', 0) end
end
if ARGV[11] ~= '' then redis.call('HSET', SAGA, 'wh', ARGV[11]) end
-- Admission: a slot if fewer than MAX_RUNNING run and nobody waits before us (FIFO).
local admitted = redis.call('ZCARD', KEYS[STATUS_INDEX.RUNNING]) < MAX_RUNNING
  and redis.call('ZCARD', KEYS[STATUS_INDEX.PENDING]) == 0
if admitted then
  set_status('RUNNING')
  set_timer('next', now + REDRIVE_MS)
else
  set_status('PENDING')
end
redis.call('ZADD', KEYS[12], now, ARGV[1])
redis.call('ZADD', KEYS[13], now, ARGV[1])
-- A saga without a correlation id of its own has its id as one: nothing to index (see
-- RedisStore.correlated), which spares a key per saga.
if ARGV[3] ~= ARGV[1] then redis.call('ZADD', KEYS[14], now, ARGV[1]) end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), 'saga|' .. ARGV[1])
stat('started|' .. ARGV[2])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[15], 'saga', ARGV[1], 'fp', ARGV[7])
  redis.call('EXPIRE', KEYS[15], ARGV[8])
  redis.call('HSET', SAGA, 'idk', KEYS[15])  -- released when the saga is deleted
end
local version = commit(now, 'created')
if ARGV[10] ~= '' then
  local origin = cjson.decode(ARGV[10])
  if origin.workflow then  -- the registered workflow and version it runs (sagas/catalog.py)
    redis.call('HSET', SAGA, 'wf', origin.workflow, 'wfv', tostring(origin.workflow_version))
  end
  if origin.rerun_of then
    redis.call('HSET', SAGA, 'rerun_of', origin.rerun_of)
    version = commit(now, 'rerun_of', nil, origin.reason, origin.actor, cjson.encode(origin.data))
  end
end
if admitted then return {'created', version} end
return {'pending', version}
