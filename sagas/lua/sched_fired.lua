-- Record a schedule's firing (sagas/schedules.py) if its fire time is still the latest.
-- KEYS[1] schedule:<id>, KEYS[2] stats (schedules|started, schedules|failed). ARGV[1] the fire time (epoch ms), ARGV[2] the saga id ("" when it
-- could not start), ARGV[3] "1" when this firing created the saga, ARGV[4] the error or "".
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'last_slot') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'last_saga', ARGV[2], 'last_error', ARGV[4])
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[1], 'fired', 1)
  redis.call('HINCRBY', KEYS[2], 'schedules|started', 1)
end
if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[2], 'schedules|failed', 1) end
return 1
