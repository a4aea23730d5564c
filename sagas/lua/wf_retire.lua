-- Retire a workflow (sagas/catalog.py): no new sagas start from it; its versions stay
-- readable and running sagas are unaffected (each holds its own definition).
-- KEYS[1] wf:<name>. Returns {"missing"}, {"retired", latest} or {"already", latest}.
local latest = redis.call('HGET', KEYS[1], 'latest')
if not latest then return {'missing'} end
if redis.call('HGET', KEYS[1], 'retired') == '1' then return {'already', tonumber(latest)} end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'retired', '1', 'retired_at',
  tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return {'retired', tonumber(latest)}
