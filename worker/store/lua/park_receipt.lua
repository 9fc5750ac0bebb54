-- Keep a carrier receipt whose carrier id is not indexed (yet) until `record_accepted` of that
-- id hands it back.
--
-- KEYS: carrier index, parked receipts of that id. ARGV: the receipt (JSON), TTL (s).
-- Returns the segment (`{id}:{seq}`) when the id was indexed meanwhile (nothing parked).
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return false
