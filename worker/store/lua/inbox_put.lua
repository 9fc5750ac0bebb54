-- Keep a carrier's receipt request in the inbox until a drain applied it.
--
-- KEYS: inbox (hash entry -> request), inbox watch (sorted set entry -> when due), ring flag.
-- ARGV: entry, request (JSON), now (ms), flag slack (ms).
-- The request is due now. Returns 1 when no drain is planned or running (the flag is then
-- set: the caller starts one), else 0: the running drain takes it.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if redis.call('GET', KEYS[3]) then return 0 end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1
