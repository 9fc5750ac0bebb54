-- Take a segment for submission, once.
--
-- KEYS: segments hash. ARGV: seq, now (ms), '1' when the carrier honours client references,
-- the claim's token (unique per call; '' for none).
-- A pending segment is taken (`submitting`, its claim time, attempt count and token recorded);
-- with ARGV[3] = '1' one whose outcome is unknown is taken too: it is resent with the same
-- client reference, which the carrier answers once. Returns 1 when taken, 0 when anyone
-- already did. A segment this very claim took (its token) answers 1 again and changes nothing:
-- a caller whose reply was lost asks again with the same token and learns it holds the claim.
local seq = ARGV[1]
local v = redis.call('HMGET', KEYS[1], seq .. ':status', seq .. ':attempts', seq .. ':claim')
local s = v[1]
if s == 'submitting' and ARGV[4] ~= '' and v[3] == ARGV[4] then return 1 end
if s and s ~= 'pending' and not (s == 'unknown' and ARGV[3] == '1') then return 0 end
redis.call('HSET', KEYS[1], seq .. ':status', 'submitting', seq .. ':submitted_at', ARGV[2],
           seq .. ':attempts', (tonumber(v[2]) or 0) + 1, seq .. ':claim', ARGV[4])
return 1
