-- A drain of one endpoint's queue takes the receipts due now.
--
-- KEYS: the endpoint's queue, its ring flag, its health (see endpoint_route.lua).
-- ARGV: the drain's token, now (ms), most items to take, lease (ms: how long the drain may work
-- on them before another may start), '1' to keep the drain (`idle`) when nothing is due, flag
-- slack (ms), not before (ms: with no items taken, the next drain starts no earlier; a batch
-- window).
-- Replies {'busy'} when another drain runs; {'backoff', until} while the endpoint backs off
-- (the flag plans a drain then); {'items', [members]} (removed from the queue, the flag marks
-- this drain running for the lease); {'idle'} (nothing due, still running: the drain looks
-- again shortly); {'later', at} (only later items: a drain is planned then); {'empty'} (the
-- flag is cleared, so the next receipt routed here starts a drain).
local mine = 'run:' .. ARGV[1]
local flag = redis.call('GET', KEYS[2])
if flag and string.sub(flag, 1, 4) == 'run:' and flag ~= mine then return {'busy'} end
local now, slack = tonumber(ARGV[2]), tonumber(ARGV[6])
local backoff = tonumber(redis.call('HGET', KEYS[3], 'backoff_until') or '0')
if backoff > now then
  redis.call('SET', KEYS[2], backoff, 'PX', backoff - now + slack)
  return {'backoff', backoff}
end
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #items > 0 then
  redis.call('ZREM', KEYS[1], unpack(items))
  redis.call('SET', KEYS[2], mine, 'PX', ARGV[4])
  return {'items', items}
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[2], mine, 'PX', ARGV[4])
  return {'idle'}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('DEL', KEYS[2])
  return {'empty'}
end
local at = math.max(tonumber(first[2]), tonumber(ARGV[7] or '0'))
redis.call('SET', KEYS[2], at, 'PX', math.max(at - now, 0) + slack)
return {'later', at}
