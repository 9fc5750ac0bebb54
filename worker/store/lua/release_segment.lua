-- Give a claimed segment back after a failure that sent nothing.
--
-- KEYS: segments hash. ARGV: seq, error code, error message.
-- A `submitting` segment becomes `pending` again with the reason. Returns 1 if it was claimed.
local f = ARGV[1] .. ':status'
if redis.call('HGET', KEYS[1], f) ~= 'submitting' then return 0 end
redis.call('HSET', KEYS[1], f, 'pending', ARGV[1] .. ':error_code', ARGV[2],
           ARGV[1] .. ':error_message', ARGV[3])
return 1
