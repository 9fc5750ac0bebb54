-- A drain of the inbox takes the requests due now, for a while.
--
-- KEYS: inbox (hash), inbox watch (sorted set, by when due), ring flag.
-- ARGV: the drain's token, now (ms), most entries, lease (ms), '1' to keep the drain (`idle`)
-- when nothing is due, hold (ms: how long the flag marks this drain running), flag slack (ms).
-- Leased entries are due again when the lease ends (a drain that died leaves them to the
-- next); `done` removes them once applied. Replies {'busy'} when another drain runs;
-- {'items', [entries], [requests]}; {'idle'}; {'later', at} (only leased entries are left: a
-- drain is planned then); {'empty'} (the flag is cleared: the next request starts a drain).
local mine = 'run:' .. ARGV[1]
local flag = redis.call('GET', KEYS[3])
if flag and string.sub(flag, 1, 4) == 'run:' and flag ~= mine then return {'busy'} end
local now, hold = tonumber(ARGV[2]), ARGV[6]
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 then
  local until_ = now + tonumber(ARGV[4])
  local pairs_ = {}
  for i, entry in ipairs(due) do
    pairs_[2 * i - 1] = until_
    pairs_[2 * i] = entry
  end
  redis.call('ZADD', KEYS[2], unpack(pairs_))
  local requests = redis.call('HMGET', KEYS[1], unpack(due))
  for i = 1, #requests do
    if not requests[i] then requests[i] = '' end
  end
  redis.call('SET', KEYS[3], mine, 'PX', hold)
  return {'items', due, requests}
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], mine, 'PX', hold)
  return {'idle'}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('DEL', KEYS[3])
  return {'empty'}
end
local at = tonumber(first[2])
redis.call('SET', KEYS[3], at, 'PX', math.max(at - now, 0) + tonumber(ARGV[7]))
return {'later', at}
