-- Listing (RedisStore._page): one bounded piece of work per call, O(log N + ARGV count).
-- Indexes are sorted sets of saga ids scored by creation epoch ms; "newest first" is their
-- reverse order (same millisecond: greater id first). Entries are addressed by rank, never
-- by a LIMIT offset, which Redis would walk. The saga whose id is the correlation id (a saga
-- given none of its own) is not in idx:corr: it is merged in after the sagas created in the
-- same millisecond or later ("own" below).
-- ARGV[1] mode, ARGV[2] min created ("-inf" or "(<epoch ms>"), ARGV[3] max created ("+inf"
-- or "(<epoch ms>"), then by mode:
--
-- "range": one page of KEYS[1], which holds exactly the sagas that match (idx:ts:<type>:
--   <status>, idx:status:<status>, idx:type:<type>, idx:all, or idx:corr:<c> when a
--   correlation id is the only filter besides creation time), and the exact total.
--   KEYS[2] the hash of the saga whose id is ARGV[6] (only with ARGV[6]).
--   ARGV[4] offset, ARGV[5] count, ARGV[6] correlation id ("" = no own saga to merge).
--   Returns {total, {id, ...}}.
--
-- "scan": a correlation id with a status or type filter. The sagas created in range of the
--   smaller of KEYS[1] (the filter's index) and KEYS[2] (idx:corr:<c>) are read newest first,
--   ARGV[8] at most per call, each checked for membership of the other (no scores are read:
--   formatting them would cost more than the rest).
--   KEYS[3] the hash of the saga whose id is ARGV[4].
--   ARGV[4] correlation id, ARGV[5] the set read (1 or 2; 0 on the first call: choose),
--   ARGV[6] the last id read ("" on the first call), ARGV[7] how many were read (where to go
--   on if that id left the set), ARGV[8] how many to read at most, ARGV[9] the own saga's
--   created ms ("" if it does not match; ignored on the first call, which finds out).
--   Returns {set read, own saga's created ms if it matches (else nil), {id, ...} matched,
--   how many of these come before the own saga, whether every saga before it has been read
--   (1/0), last id read, how many read in all (from the newest in range), how many left}.
local mode, low, high = ARGV[1], ARGV[2], ARGV[3]

-- Ranks (newest first) of the first and last entry of `key` created in range.
local function window(key)
  local first = 0
  if high ~= '+inf' then first = redis.call('ZCOUNT', key, string.sub(high, 2), '+inf') end
  return first, first + redis.call('ZCOUNT', key, low, high) - 1
end

-- The creation ms of the saga whose id is the correlation id, if it is in range.
local function own(hash, corr)
  if corr == '' or redis.call('HGET', hash, 'corr') ~= corr then return nil end
  local created = tonumber(redis.call('HGET', hash, 'created'))
  if low ~= '-inf' and created <= tonumber(string.sub(low, 2)) then return nil end
  if high ~= '+inf' and created >= tonumber(string.sub(high, 2)) then return nil end
  return created
end

if mode == 'range' then
  local first, last = window(KEYS[1])
  local offset, count = tonumber(ARGV[4]), tonumber(ARGV[5])
  local total = last - first + 1
  local created = own(KEYS[2], ARGV[6])
  local at = nil -- the own saga's place in the merged list (0-based)
  if created then
    at = redis.call('ZCOUNT', KEYS[1], created, high)
    total = total + 1
  end
  local skip = offset
  if at and offset > at then skip = offset - 1 end
  local ids = {}
  if first + skip <= last then
    ids = redis.call('ZREVRANGE', KEYS[1], first + skip, math.min(first + skip + count - 1, last))
  end
  if at and at >= offset and at < offset + count then
    table.insert(ids, at - offset + 1, ARGV[6])
    if #ids > count then table.remove(ids) end
  end
  return {total, ids}
end

-- mode == 'scan'
local which, created = tonumber(ARGV[5]), tonumber(ARGV[9])
if which == 0 then
  local f1, l1 = window(KEYS[1])
  local f2, l2 = window(KEYS[2])
  which = (l1 - f1 <= l2 - f2) and 1 or 2
  created = own(KEYS[3], ARGV[4])
  if created and not redis.call('ZSCORE', KEYS[1], ARGV[4]) then created = nil end
end
local key, other = KEYS[which], KEYS[3 - which]
local first, last = window(key)
local start = first + tonumber(ARGV[7])
if ARGV[6] ~= '' then
  local rank = redis.call('ZREVRANK', key, ARGV[6])
  if rank then start = rank + 1 end
end
start = math.max(start, first)
local stop = math.min(start + tonumber(ARGV[8]) - 1, last)
-- Entries ranked before `ahead` were created in the own saga's millisecond or later.
local ahead = created and redis.call('ZCOUNT', key, created, '+inf') or 0
local ids, matched, before = {}, {}, 0
if start <= stop then ids = redis.call('ZREVRANGE', key, start, stop) end
-- The own saga is never in idx:corr, so it is never matched here: the caller merges it.
if #ids > 0 then
  local scores = redis.call('ZMSCORE', other, unpack(ids))
  for k = 1, #ids do
    if scores[k] then
      matched[#matched + 1] = ids[k]
      if start + k - 1 < ahead then before = before + 1 end
    end
  end
end
local last_id = ARGV[6]
if #ids > 0 then last_id = ids[#ids] end
local passed = (stop + 1 >= ahead or stop >= last) and 1 or 0
return {which, created or false, matched, before, passed, last_id,
  math.max(stop, start - 1) + 1 - first, math.max(last - stop, 0)}
