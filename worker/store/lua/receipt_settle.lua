-- Record what one delivery attempt of a claimed client receipt came to.
--
-- KEYS: message hash, receipt watch, events list, dead letters (sorted set).
-- ARGV: level, outcome (`sent`, `gone`, `dead` or `retry`), now (ms), the attempt's event
-- (JSON, appended to the message's history), due (ms; `retry` only), why it waits (`retry`),
-- '1' to clear an earlier why.
-- `retry`: a receipt still `sending` becomes `open` again, due then (its watch entry too), and
-- remembers why; returns 1 (0 if the attempt had lost its claim). `sent` / `gone` / `dead`:
-- the receipt is done and unwatched (`dead` also dead-lettered); returns 2 when closing a
-- level 1 releases its waiting level 2 (open, due now: the caller routes it), else 1.
-- 0 for a message that no longer exists.
local lvl, outcome, now = ARGV[1], ARGV[2], ARGV[3]
local msg, p = KEYS[1], 'rcpt:' .. ARGV[1] .. ':'
local m = redis.call('HMGET', msg, 'id', p .. 'state', 'rcpt:2:state', p .. 'first_attempt_at')
local id = m[1]
if not id then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[4])
if outcome == 'retry' then
  if m[2] ~= 'sending' then return 0 end
  local set = {p .. 'state', 'open', p .. 'lease', 0, p .. 'not_before', ARGV[5], p .. 'why',
               ARGV[6]}
  if not m[4] then
    set[#set + 1] = p .. 'first_attempt_at'
    set[#set + 1] = now
  end
  redis.call('HSET', msg, unpack(set))
  redis.call('ZADD', KEYS[2], ARGV[5], id .. ':' .. lvl)
  return 1
end
local released = lvl == '1' and m[3] == 'waiting'
if released then
  redis.call('HSET', msg, p .. 'state', outcome, 'rcpt:2:state', 'open')
else
  redis.call('HSET', msg, p .. 'state', outcome)
end
if ARGV[7] == '1' then redis.call('HDEL', msg, p .. 'why') end
redis.call('ZREM', KEYS[2], id .. ':' .. lvl)
if outcome == 'dead' then redis.call('ZADD', KEYS[4], now, id .. ':' .. lvl) end
if released then
  redis.call('ZADD', KEYS[2], now, id .. ':2')
  return 2
end
return 1
