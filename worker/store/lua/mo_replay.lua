-- Make an MO's webhook due again (`smsq mo replay`): same webhook id and content, a fresh
-- retry schedule.
--
-- KEYS: the MO hash, the MO watch, the MO dead letters. ARGV: now (ms).
-- Only an MO with a webhook (an owner with an mo-url) that is done (`sent`, `gone`, `dead`)
-- is replayed; one still open or sending is left to its schedule. Returns 1 when replayed.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'sent' and state ~= 'gone' and state ~= 'dead' then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
local attempts = redis.call('HGET', KEYS[1], 'attempts') or '0'
redis.call('HSET', KEYS[1], 'state', 'open', 'lease', 0, 'not_before', 0, 'base', attempts)
redis.call('HDEL', KEYS[1], 'first_attempt_at', 'why')
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[2], ARGV[1], id)
return 1
