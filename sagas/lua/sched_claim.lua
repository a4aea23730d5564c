-- Claim a schedule's fire time (sagas/schedules.py): each fire time is started at most once.
-- KEYS[1] schedule:<id> (hash: ..., paused, last_slot (epoch ms), last_saga, fired, skipped),
-- KEYS[2] stats (the counter schedules|skipped)
-- ARGV[1] the fire time (epoch ms), ARGV[2] "start" or "skip" (missed, catch_up skip).
-- Returns {"go"} (start it), {"skipped"} (claimed, not started), {"done"} (claimed before),
-- {"old"} (a later fire time was claimed), {"paused"} or {"missing"}.
-- A fire time claimed but not yet recorded as started (its firing was cut short) is
-- claimed again by a repeat: the start itself is idempotent (saga id and key derive from it).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HGET', KEYS[1], 'paused') == '1' then return {'paused'} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_slot') or '0') or 0
local slot = tonumber(ARGV[1])
if slot < last then return {'old'} end
if slot == last then
  local saga = redis.call('HGET', KEYS[1], 'last_saga') or ''
  if saga ~= '' or ARGV[2] == 'skip' or redis.call('HGET', KEYS[1], 'last_skip') == '1' then
    return {'done'}
  end
end
if ARGV[2] == 'skip' then
  redis.call('HSET', KEYS[1], 'last_slot', slot, 'last_saga', '', 'last_skip', '1')
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
  redis.call('HINCRBY', KEYS[2], 'schedules|skipped', 1)
  return {'skipped'}
end
redis.call('HSET', KEYS[1], 'last_slot', slot, 'last_saga', '', 'last_skip', '0')
return {'go'}
