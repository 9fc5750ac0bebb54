-- Keep a carrier's receipt request in the inbox until a drain applied it.
--
-- KEYS: inbox (hash entry -> request), inbox watch (sorted set entry -> when due), ring flag,
-- the inbox's sequence counter.
-- ARGV: request (JSON), now (ms), flag slack (ms).
-- The request gets the next entry name (a zero-padded sequence number: requests due at the
-- same millisecond are taken in the order they came) and is due now. Returns {entry, 1} when
-- no drain is planned or running (the flag is then set: the caller starts one), else
-- {entry, 0}: the running drain takes it.
local entry = string.format('%016d', redis.call('INCR', KEYS[4]))
redis.call('HSET', KEYS[1], entry, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], entry)
if redis.call('GET', KEYS[3]) then return {entry, 0} end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return {entry, 1}
