-- Name a segment by a second carrier id: the one its SMSC answered with (SMPP submit_sm_resp),
-- after the segment was indexed under ours. Receipts name the SMSC's id.
--
-- KEYS: segments hash, carrier index of the new id, receipts parked for the new id.
-- ARGV: seq, the new carrier id, `{id}:{seq}`, index TTL (seconds).
-- The new id is indexed and becomes the segment's `carrier_id` (its state is left alone: the
-- caller applies the SMSC's answer as a receipt); returns the receipts parked for that id
-- (they came before it was known; the caller applies them after the answer).
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], ARGV[1] .. ':carrier_id', ARGV[2])
local parked = redis.call('LRANGE', KEYS[3], 0, -1)
if #parked > 0 then redis.call('DEL', KEYS[3]) end
return parked
