-- The concatenation reference of a message: fixed once chosen, fresh per recipient.
--
-- KEYS: message hash, the recipient's counter. ARGV: modulus (256 or 65536), counter TTL (s).
-- Returns the reference (kept in the message as `concat_ref`).
local ref = redis.call('HGET', KEYS[1], 'concat_ref')
if ref then return tonumber(ref) end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
ref = n % tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'concat_ref', ref)
return ref
