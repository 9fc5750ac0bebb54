-- A claimed segment's outcome is unknown: its request left and no answer came back, or (with
-- `claimed before`) its claim is older than that: the run holding it died.
--
-- KEYS: segments hash, message hash, counters hash.
-- ARGV: seq, claimed before (ms; '' = any time), error code, error message, now (ms), counter.
-- The segment becomes `unknown` and is counted. Returns 1 if it was so claimed.
local seq = ARGV[1]
local v = redis.call('HMGET', KEYS[1], seq .. ':status', seq .. ':submitted_at')
if v[1] ~= 'submitting' then return 0 end
if ARGV[2] ~= '' and (tonumber(v[2]) or 0) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], seq .. ':status', 'unknown', seq .. ':error_code', ARGV[3],
           seq .. ':error_message', ARGV[4], seq .. ':done_at', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'unknown_outcomes', 1)
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
return 1
