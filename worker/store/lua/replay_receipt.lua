-- Send an opened receipt again (`smsq dlr replay`): a fresh retry schedule, the same event id,
-- seq and content.
--
-- KEYS: message hash, receipt watch, dead letters. ARGV: level, now (ms).
-- The receipt is `open` and due now, its earlier attempts no longer count against the
-- schedule (`base`), and it leaves the dead letters. Returns 0 if it was never opened.
local p = 'rcpt:' .. ARGV[1] .. ':'
local m = redis.call('HMGET', KEYS[1], p .. 'state', 'id', p .. 'attempts')
if not m[1] then return 0 end
redis.call('HSET', KEYS[1], p .. 'state', 'open', p .. 'lease', 0, p .. 'not_before', 0,
           p .. 'base', m[3] or 0)
redis.call('HDEL', KEYS[1], p .. 'first_attempt_at')
redis.call('ZADD', KEYS[2], ARGV[2], m[2] .. ':' .. ARGV[1])
redis.call('ZREM', KEYS[3], m[2] .. ':' .. ARGV[1])
return 1
