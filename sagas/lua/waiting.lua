-- Event steps waiting for their reply, for GET /health/ (sagas/health.py): the RUNNING sagas
-- whose current step is WAITING (a WAITING step only exists in a RUNNING saga, and
-- MAX_CONCURRENT_SAGAS bounds those). Reads at most ARGV[2] sagas, oldest first.
-- KEYS[1] <prefix>idx:status:RUNNING
-- ARGV[1] the key prefix (a saga's hash is <prefix>{<id>}), ARGV[2] sagas to read at most
-- Returns {steps waiting, the oldest waiting step's start (epoch ms) or nil, sagas read}.
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local waiting, oldest = 0, nil
for _, id in ipairs(ids) do
  local saga = ARGV[1] .. '{' .. id .. '}'
  local cur = redis.call('HGET', saga, 'cur')
  if cur and cur ~= '-1' then
    local step = redis.call('HMGET', saga, cur .. ':st', cur .. ':t0')
    if step[1] == 'WAITING' then
      waiting = waiting + 1
      local t0 = tonumber(step[2])
      if t0 and (oldest == nil or t0 < oldest) then oldest = t0 end
    end
  end
end
if oldest == nil then return {waiting, false, #ids} end
return {waiting, oldest, #ids}
