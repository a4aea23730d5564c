-- One page of saga ids, newest first, and the total that match.
-- KEYS[1] the index that holds exactly the sagas matching the status and type filters
--         (idx:ts:<type>:<status>, idx:status:<status>, idx:type:<type> or idx:all; scored by
--         creation epoch ms), so that without a correlation id a page costs O(log N + page).
-- KEYS[2] idx:corr:<correlation id> and KEYS[3] the saga hash whose id is that correlation
--         id (a saga without one of its own is not in idx:corr): only with ARGV[5].
-- ARGV[1] min created ("-inf" or "(<epoch ms>"), ARGV[2] max created ("+inf" or "(<ms>"),
-- ARGV[3] offset, ARGV[4] count, ARGV[5] correlation id ("" = no such filter).
-- With a correlation id, its sagas (few, as a rule) are checked one by one against KEYS[1].
-- Returns {total, {id, ...}}.
local low, high = ARGV[1], ARGV[2]
if ARGV[5] == '' then
  local total = redis.call('ZCOUNT', KEYS[1], low, high)
  local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], high, low, 'LIMIT', ARGV[3], ARGV[4])
  return {total, ids}
end

local function above(score, bound)
  if bound == '-inf' then return true end
  return score > tonumber(string.sub(bound, 2))
end
local function below(score, bound)
  if bound == '+inf' then return true end
  return score < tonumber(string.sub(bound, 2))
end

-- Candidates newest first: the correlation index, and the saga whose own id is the value.
local candidates = redis.call('ZREVRANGEBYSCORE', KEYS[2], high, low, 'WITHSCORES')
local own, own_created = nil, nil
if redis.call('HGET', KEYS[3], 'corr') == ARGV[5] then
  own, own_created = ARGV[5], tonumber(redis.call('HGET', KEYS[3], 'created'))
end
local matched = {}
local function consider(id, created)
  if above(created, low) and below(created, high) and redis.call('ZSCORE', KEYS[1], id) then
    matched[#matched + 1] = id
  end
end
for k = 1, #candidates, 2 do
  local created = tonumber(candidates[k + 1])
  if own and own_created > created then
    consider(own, own_created)
    own = nil
  end
  consider(candidates[k], created)
end
if own then consider(own, own_created) end

local page = {}
local first = tonumber(ARGV[3]) + 1
for k = first, math.min(#matched, first + tonumber(ARGV[4]) - 1) do page[#page + 1] = matched[k] end
return {#matched, page}
