-- Admission control: give a PENDING saga a slot if fewer than MAX_RUNNING sagas run.
-- KEYS: common 1..11 (lib.lua) of the saga to promote (the caller picks the oldest PENDING).
-- Returns {"promoted", correlation id, step count}, {"full"} or {"none"} (not PENDING).
-- The slot count is the RUNNING index itself, so no crash can leak a slot.
if get('status') ~= 'PENDING' then return {'none'} end
if redis.call('ZCARD', KEYS[STATUS_INDEX.RUNNING]) >= MAX_RUNNING then return {'full'} end
local now = now_ms()
set_status('RUNNING')
set_timer('next', now + REDRIVE_MS)
commit(now, 'admitted')
return {'promoted', get('corr'), tonumber(get('n'))}
